"""FCN-32s/16s/8s (baselines/fcn.py): skip structure, parameter counts, forward vs hand composition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from refinenet.registry import build_model

RESNET18_BACKBONE = 11_689_512 - (512 * 1000 + 1000)  # torchvision resnet18 without fc
RESNET101_BACKBONE = 44_549_160 - (2048 * 1000 + 1000)  # torchvision resnet101 without fc
VGG16_CONV = 14_714_688  # torchvision vgg16().features


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _score(channels: int, classes: int) -> int:  # a 1x1 conv with bias
    return channels * classes + classes


def test_skip_structure_resnet18():
    models = {name: build_model(name, 5, backbone="resnet18") for name in ("fcn32s", "fcn16s", "fcn8s")}
    layers = {
        name: [n for n, _ in m.named_children() if n.startswith("score_")] for name, m in models.items()
    }
    assert layers == {
        "fcn32s": ["score_fr"],
        "fcn16s": ["score_fr", "score_pool4"],
        "fcn8s": ["score_fr", "score_pool4", "score_pool3"],
    }
    counts = {name: _n_params(m) for name, m in models.items()}
    assert counts == {"fcn32s": 11_179_077, "fcn16s": 11_180_362, "fcn8s": 11_181_007}
    # score_fr on block-4 (512 ch), score_pool4 on block-3 (256), score_pool3 on block-2 (128)
    assert counts["fcn32s"] == RESNET18_BACKBONE + _score(512, 5)
    assert counts["fcn16s"] - counts["fcn32s"] == _score(256, 5)
    assert counts["fcn8s"] - counts["fcn16s"] == _score(128, 5)


def test_parameter_counts_resnet101_and_vgg16():
    with torch.device("meta"):  # shapes only: no memory, no init cost
        counts = {
            (name, backbone): _n_params(build_model(name, 21, backbone=backbone))
            for name in ("fcn32s", "fcn16s", "fcn8s")
            for backbone in ("resnet101", "vgg16")
        }
    assert counts[("fcn32s", "resnet101")] == 42_543_189 == RESNET101_BACKBONE + _score(2048, 21)
    assert counts[("fcn16s", "resnet101")] == 42_564_714
    assert counts[("fcn8s", "resnet101")] == 42_575_487
    # VGG-16 FCN: conv layers + fc6 (7x7x512 -> 4096) + fc7 (4096 -> 4096) + score layers on fc7/pool4/pool3.
    fc6_fc7 = (512 * 49 * 4096 + 4096) + (4096 * 4096 + 4096)
    assert counts[("fcn32s", "vgg16")] == 134_346_581 == VGG16_CONV + fc6_fc7 + _score(4096, 21)
    assert (
        counts[("fcn8s", "vgg16")]
        == 134_362_751
        == counts[("fcn32s", "vgg16")] + _score(512, 21) + _score(256, 21)
    )


def test_fcn8s_forward_matches_hand_composition():
    torch.manual_seed(0)
    model = build_model("fcn8s", 3, backbone="resnet18").eval()
    for layer in (model.score_pool4, model.score_pool3):  # zero at init: make the skips visible
        torch.nn.init.normal_(layer.weight, std=0.1)
        torch.nn.init.normal_(layer.bias, std=0.1)
    x = torch.randn(1, 3, 65, 47)
    with torch.no_grad():
        _, c2, c3, c4 = model.backbone(x)
        assert (c2.shape[-2:], c3.shape[-2:], c4.shape[-2:]) == ((9, 6), (5, 3), (3, 2))

        def up(t, ref):
            return F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=False)

        scores = up(model.score_fr(c4), c3) + model.score_pool4(c3)
        scores = up(scores, c2) + model.score_pool3(c2)
        expected = up(scores, x)
        assert torch.allclose(model(x), expected, atol=1e-6)


def test_fcn16s_starts_from_fcn32s_scores():
    """FCN §4.2: the skip score layer starts at zero, so FCN-16s initially outputs FCN-32s's scores
    (upsampled in two steps, 1/32 -> 1/16 -> input, instead of one)."""
    torch.manual_seed(0)
    fcn32s = build_model("fcn32s", 4, backbone="resnet18").eval()
    fcn16s = build_model("fcn16s", 4, backbone="resnet18").eval()
    missing, unexpected = fcn16s.load_state_dict(fcn32s.state_dict(), strict=False)
    assert sorted(missing) == ["score_pool4.bias", "score_pool4.weight"] and not unexpected
    assert not fcn16s.score_pool4.weight.any() and not fcn16s.score_pool4.bias.any()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        _, _, c3, c4 = fcn32s.backbone(x)
        scores_32 = fcn32s.score_fr(c4)
        one_step = F.interpolate(scores_32, size=(64, 96), mode="bilinear", align_corners=False)
        two_steps = F.interpolate(
            F.interpolate(scores_32, size=c3.shape[-2:], mode="bilinear", align_corners=False),
            size=(64, 96),
            mode="bilinear",
            align_corners=False,
        )
        assert torch.allclose(fcn32s(x), one_step, atol=1e-6)
        assert torch.allclose(fcn16s(x), two_steps, atol=1e-6)


@pytest.mark.parametrize("size", [(65, 47), (17, 9), (64, 64), (33, 100)])
def test_vgg16_any_input_size(size):
    model = build_model("fcn8s", 2, backbone="vgg16", fc_channels=8).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 2, *size)


def test_vgg16_pads_to_multiple_of_32_and_crops():
    torch.manual_seed(0)
    model = build_model("fcn32s", 2, backbone="vgg16", fc_channels=8).eval()
    x = torch.randn(1, 3, 50, 40)
    padded = F.pad(x, (0, 24, 0, 14))  # to 64 x 64, zeros at the bottom and right
    with torch.no_grad():
        assert torch.allclose(model(x), model(padded)[..., :50, :40], atol=1e-6)


def test_fc_channels_only_for_vgg16():
    with pytest.raises(ValueError, match="fc_channels applies to backbone='vgg16' only"):
        build_model("fcn8s", 5, backbone="resnet18", fc_channels=64)


def test_unknown_backbone_lists_valid_ones():
    with pytest.raises(ValueError, match="Valid backbones: .*resnet101.*vgg16"):
        build_model("fcn8s", 5, backbone="vgg19")
