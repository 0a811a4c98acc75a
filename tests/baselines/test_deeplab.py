"""DeepLab-v2 (dilated ResNet + ASPP-L) and DeepLab-v3 (smp) in baselines/deeplab.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from baselines.deeplab import ASPP, dilated_resnet
from refinenet.backbones import ResNetBackbone
from refinenet.registry import build_model

RESNET101_BACKBONE = 44_549_160 - (2048 * 1000 + 1000)  # torchvision resnet101 without fc


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("output_stride", "sizes"), [(8, (16, 8, 8, 8)), (16, (16, 8, 4, 4))])
def test_dilated_resnet18_strides(output_stride, sizes):
    backbone = dilated_resnet("resnet18", weights=None, output_stride=output_stride).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in features] == list(sizes)
    assert [f.shape[1] for f in features] == [64, 128, 256, 512]
    assert backbone.output_stride == output_stride


def test_basic_block_dilation_follows_torchvision_bottleneck_rule():
    """First unit of a dilated block keeps the previous dilation, the others take the new one."""
    ours = dilated_resnet("resnet18", weights=None, output_stride=8)
    with torch.device("meta"):
        reference = ResNetBackbone("resnet50", output_stride=8)  # torchvision replace_stride_with_dilation
    for layer in ("layer3", "layer4"):
        ours_rates = [u.conv1.dilation[0] for u in getattr(ours, layer)]
        reference_rates = [u.conv2.dilation[0] for u in getattr(reference, layer)]
        assert ours_rates == reference_rates[: len(ours_rates)]
        assert all(u.conv2.dilation == u.conv1.dilation == u.conv1.padding for u in getattr(ours, layer))
        assert all(
            c.stride == (1, 1) for c in getattr(ours, layer).modules() if isinstance(c, torch.nn.Conv2d)
        )
    assert [u.conv1.dilation[0] for u in ours.layer3] == [1, 2]
    assert [u.conv1.dilation[0] for u in ours.layer4] == [2, 4]


def test_aspp_rates_are_the_configured_ones():
    default = build_model("deeplabv2", 5, backbone="resnet18")
    assert [(b.dilation, b.padding, b.kernel_size) for b in default.aspp.branches] == [
        ((r, r), (r, r), (3, 3)) for r in (6, 12, 18, 24)
    ]
    custom = build_model("deeplabv2", 5, backbone="resnet18", rates=(2, 3))
    assert [b.dilation[0] for b in custom.aspp.branches] == [2, 3]


def test_deeplabv2_output_is_the_upsampled_sum_of_branches():
    torch.manual_seed(0)
    model = build_model("deeplabv2", 4, backbone="resnet18").eval()
    x = torch.randn(1, 3, 65, 47)
    with torch.no_grad():
        block4 = model.backbone(x)[-1]
        assert block4.shape[-2:] == (9, 6)  # output stride 8 (ceil)
        branches = [
            F.conv2d(block4, b.weight, b.bias, padding=r, dilation=r)
            for b, r in zip(model.aspp.branches, (6, 12, 18, 24), strict=True)
        ]
        scores = branches[0] + branches[1] + branches[2] + branches[3]
        expected = F.interpolate(scores, size=(65, 47), mode="bilinear", align_corners=False)
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_aspp_sums_branches():
    aspp = ASPP(8, 3, (1, 2))
    x = torch.randn(1, 8, 5, 5)
    assert torch.allclose(aspp(x), aspp.branches[0](x) + aspp.branches[1](x), atol=1e-6)


def test_parameter_counts_resnet101():
    with torch.device("meta"):
        deeplabv2 = build_model("deeplabv2", 21)
        deeplabv3 = build_model("deeplabv3", 21)
        torchvision_v3 = torchvision.models.segmentation.deeplabv3_resnet101(
            weights=None, weights_backbone=None, num_classes=21, aux_loss=False
        )
    # DeepLab-v2: ResNet-101 + four 3x3 class-score convolutions with bias.
    assert _n_params(deeplabv2) == 44_048_532 == RESNET101_BACKBONE + 4 * (2048 * 9 * 21 + 21)
    # perf.md: smp DeepLabV3("resnet101", encoder_output_stride=8) and torchvision's: 58.63 M.
    assert _n_params(deeplabv3) == 58_630_997 == _n_params(torchvision_v3)


def test_deeplabv3_output_stride_and_rates():
    model = build_model("deeplabv3", 3, backbone="resnet18", output_stride=16, rates=(6, 12, 18))
    rates = [m.dilation[0] for m in model.net.decoder.aspp.modules() if isinstance(m, torch.nn.Conv2d)]
    assert set(rates) == {1, 6, 12, 18}  # 1: the 1x1 branch
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 65, 47)).shape == (1, 3, 65, 47)
    assert model.net.encoder.layer4[0].conv1.stride == (1, 1)
    assert model.net.encoder.layer3[0].conv1.stride == (2, 2)


def test_deeplabv3_batch_of_one_in_training_is_explained():
    model = build_model("deeplabv3", 3, backbone="resnet18").train()
    with pytest.raises(ValueError, match="batch of 2 or more"):
        model(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("name", ["deeplabv2", "deeplabv3"])
def test_bad_options(name):
    with pytest.raises(ValueError, match="output_stride must be 8 or 16"):
        build_model(name, 3, backbone="resnet18", output_stride=32)
    with pytest.raises(ValueError, match="rates"):
        build_model(name, 3, backbone="resnet18", rates=(6, 0))
    with pytest.raises(ValueError, match="Valid backbones"):
        build_model(name, 3, backbone="resnet20")
