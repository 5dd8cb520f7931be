"""Training: the published loss, the trainer (resumable, seeded, torchrun-ready) and QAT.

- :mod:`.losses`: L1 + L2 + 0.1 (1 - cosine) [+ 0.05 VGG16 perceptual, with local weights]
- :mod:`.trainer`: ``train(TrainConfig(...))``, behind ``itm-onnx train``
- :mod:`.qat`: ``prepare_qat(model)``, the fake-quant structure that exports to QDQ ONNX
"""

from .qat import prepare_qat
from .trainer import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "prepare_qat", "train"]
