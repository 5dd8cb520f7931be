"""Model definitions and the registry (``create_model``)."""

from .gated import GatedUNet, GatedUNetConfig
from .mqnet import MQNet, MQNetConfig
from .registry import create_model, get_entry, list_models, qat_aware, register_model

build_mqnet = qat_aware(MQNet)
build_gated_unet = qat_aware(GatedUNet)

register_model("mqnet", MQNetConfig, build_mqnet,
               "MQNet as released: MobileNetV2-0.35 U-Net, channel attention (r=2)")
register_model("mqnet-sa", MQNetConfig, build_mqnet, "MQNet with spatial attention",
               attention="sa")
register_model("mqnet-csa", MQNetConfig, build_mqnet, "MQNet with channel-spatial attention",
               attention="csa")
register_model("mqnet-noatt", MQNetConfig, build_mqnet, "MQNet without attention",
               attention="none")
for _width in (12, 24, 32):
    register_model(f"gated-unet-c{_width}", GatedUNetConfig, build_gated_unet,
                   f"gated encoder, multi-scale refiners (CVPRW 2026), width c={_width}",
                   width=_width)

__all__ = ["GatedUNet", "GatedUNetConfig", "MQNet", "MQNetConfig", "create_model", "get_entry",
           "list_models", "register_model"]
