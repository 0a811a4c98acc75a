"""U-Net (smp) in baselines/unet.py: padding to multiples of 32, parameter count, options."""

from __future__ import annotations

import pytest
import torch

from refinenet.registry import build_model


@pytest.mark.parametrize("size", [(65, 47), (32, 32), (7, 100)])
def test_any_input_size(size):
    model = build_model("unet", 2, backbone="resnet18", decoder_channels=(16, 16, 8, 8, 8)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 2, *size)


def test_output_is_the_padded_output_cropped():
    torch.manual_seed(0)
    model = build_model("unet", 2, backbone="resnet18", decoder_channels=(16, 16, 8, 8, 8)).eval()
    x = torch.randn(1, 3, 40, 33)
    padded = torch.nn.functional.pad(x, (0, 64 - 33, 0, 64 - 40))
    with torch.no_grad():
        assert torch.allclose(model(x), model.net(padded)[..., :40, :33], atol=1e-6)


def test_backbone_is_the_smp_encoder():
    model = build_model("unet", 2, backbone="resnet18")
    assert model.backbone is model.net.encoder
    assert not any(k.startswith("fc.") for k in model.backbone.state_dict())


def test_parameter_count_resnet101():
    with torch.device("meta"):
        model = build_model("unet", 21)
    # perf.md: smp Unet("resnet101") with 21 classes has 51.52 M parameters.
    assert sum(p.numel() for p in model.parameters()) == 51_516_133


def test_decoder_channels_checked():
    with pytest.raises(ValueError, match="one width per decoder stage"):
        build_model("unet", 2, backbone="resnet18", decoder_channels=(16, 8))
