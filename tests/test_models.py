import pytest
import torch

from itm_onnx import create_model, list_models
from itm_onnx.errors import ItmOnnxError
from itm_onnx.models.blocks import InstanceNorm2d, set_instancenorm_formulation
from itm_onnx.models.mqnet import OutputTransform


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_registry_names():
    assert {"mqnet", "mqnet-sa", "mqnet-csa", "mqnet-noatt"} <= set(list_models())


def test_default_parameter_count_is_pinned():
    assert n_params(create_model("mqnet")) == 875_432


@pytest.mark.parametrize("name", ["mqnet-sa", "mqnet-csa", "mqnet-noatt"])
def test_variants_stay_in_published_size(name):
    assert 800_000 <= n_params(create_model(name)) <= 1_000_000


def test_decoder_width_widens_only_below_full_resolution():
    """The capacity probe's knob (docs/real-light.md): the full-resolution fusion and the
    head keep the released shapes, so the shipped head fits a wider decoder."""
    wide, released = create_model("mqnet", decoder_width=2.0), create_model("mqnet")
    assert n_params(wide) > n_params(released)
    assert wide.backbone.decoder.stage4.project[0].out_channels == 16
    wide_head = {k: v.shape for k, v in wide.head.state_dict().items()}
    assert wide_head == {k: v.shape for k, v in released.head.state_dict().items()}
    assert wide.backbone.decoder.fuse1.fuse[0].out_channels == 16
    with torch.no_grad():
        assert wide.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    with pytest.raises(ItmOnnxError, match="decoder_width"):
        create_model("mqnet", decoder_width=0)


def test_head_width_widens_the_full_resolution_channels():
    wide = create_model("mqnet", head_width=2.0)
    assert wide.backbone.decoder.fuse1.fuse[0].out_channels == 32
    assert (wide.head.conv1.in_channels, wide.head.conv1.out_channels) == (32, 24)
    assert (wide.head.conv2.out_channels, wide.head.conv3.out_channels) == (12, 3)
    assert n_params(wide) > n_params(create_model("mqnet"))
    with torch.no_grad():
        assert wide.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_five_taps_at_256():
    model = create_model("mqnet").eval()
    with torch.no_grad():
        taps = model.backbone.encoder(torch.rand(1, 3, 256, 256))
    assert [tuple(t.shape[1:]) for t in taps] == [
        (48, 128, 128),
        (48, 64, 64),
        (96, 32, 32),
        (192, 16, 16),
        (112, 8, 8),
    ]


def test_output_shape_and_range():
    model = create_model("mqnet").eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 96))
    assert out.shape == (2, 3, 64, 96)
    assert out.min() >= 0 and out.max() <= 1


def test_split_is_visible_in_module_names():
    names = {name.split(".")[0] for name, _ in create_model("mqnet").named_parameters()}
    assert names == {"backbone", "head"}


def test_attention_appears_where_published():
    model = create_model("mqnet")
    decoder = model.backbone.decoder
    with_attention = [
        name for name, m in decoder.named_modules() if type(m).__name__ == "ChannelAttention"
    ]
    assert with_attention == [
        "stage32.0.attention",
        "stage16.0.attention",
        "stage8.attention",
        "stage4.attention",
    ]


def test_bounded_transform_reaches_full_range_and_is_identity_at_zero():
    image = torch.rand(1, 3, 8, 8)
    transform = OutputTransform("bounded")
    assert torch.allclose(transform(image, torch.ones_like(image)), torch.ones_like(image))
    assert torch.allclose(transform(image, -torch.ones_like(image)), torch.zeros_like(image))
    assert torch.equal(transform(image, torch.zeros_like(image)), image)


def test_paper_sigmoid_transform_cannot_reach_black_or_white():
    image = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    out_low = OutputTransform("sigmoid")(image, -torch.ones_like(image))
    out_high = OutputTransform("sigmoid")(image, torch.ones_like(image))
    assert out_low.min() > 0.26 and out_high.max() < 0.89


def test_decomposed_instancenorm_matches_native():
    norm = InstanceNorm2d(6)
    torch.nn.init.uniform_(norm.weight)
    torch.nn.init.uniform_(norm.bias)
    x = torch.randn(2, 6, 32, 48) * 3 + 5
    reference = norm(x)
    set_instancenorm_formulation(norm, "decomposed")
    assert torch.allclose(norm(x), reference, atol=1e-5)


def test_unknown_model_and_option_are_clear_errors():
    with pytest.raises(ItmOnnxError, match="unknown model 'nope'"):
        create_model("nope")
    with pytest.raises(ItmOnnxError, match="unknown option"):
        create_model("mqnet", colour="blue")
    with pytest.raises(ItmOnnxError, match="attention must be one of"):
        create_model("mqnet", attention="self")
