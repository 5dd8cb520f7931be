"""Model definitions and the registry (``create_model``)."""

from .mqnet import MQNet, MQNetConfig, build_mqnet
from .registry import create_model, get_entry, list_models, register_model

register_model("mqnet", MQNetConfig, build_mqnet,
               "MQNet as released: MobileNetV2-0.35 U-Net, channel attention (r=2)")
register_model("mqnet-sa", MQNetConfig, build_mqnet, "MQNet with spatial attention",
               attention="sa")
register_model("mqnet-csa", MQNetConfig, build_mqnet, "MQNet with channel-spatial attention",
               attention="csa")
register_model("mqnet-noatt", MQNetConfig, build_mqnet, "MQNet without attention",
               attention="none")

__all__ = ["MQNet", "MQNetConfig", "create_model", "get_entry", "list_models", "register_model"]
