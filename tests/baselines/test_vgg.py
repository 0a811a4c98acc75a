"""VGG-16 for FCN (baselines/vgg.py): fc6/fc7 as convolutions, torchvision weights loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import vgg16

from baselines.vgg import VGG16Backbone, convert_classifier_to_conv
from refinenet.registry import build_model

FC = 16  # reduced fc6/fc7 width; the conversion is the same at 4096


def _torchvision_layout_state(fc: int = FC) -> dict[str, torch.Tensor]:
    """A random state dict with torchvision vgg16's keys (classifier narrowed to ``fc``)."""
    torch.manual_seed(0)
    features = VGG16Backbone(fc_channels=fc).features.state_dict()
    state = {f"features.{k}": v for k, v in features.items()}
    state |= {
        "classifier.0.weight": torch.randn(fc, 512 * 7 * 7),
        "classifier.0.bias": torch.randn(fc),
        "classifier.3.weight": torch.randn(fc, fc),
        "classifier.3.bias": torch.randn(fc),
        "classifier.6.weight": torch.randn(1000, fc),
        "classifier.6.bias": torch.randn(1000),
    }
    return state


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return _torchvision_layout_state()


@pytest.fixture(scope="module")
def state_path(state, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(state, path)
    return path


def test_state_has_torchvision_keys(state):
    with torch.device("meta"):
        reference = vgg16(weights=None).state_dict()
    ours = state
    assert set(ours) == set(reference)
    assert all(ours[k].shape == reference[k].shape for k in ours if k.startswith("features."))


def test_fc6_convolution_equals_the_linear_layer(state):
    """FCN §3.1: fc6 as a 7x7 convolution computes the classifier's fc6 on each 7x7 window."""
    converted = convert_classifier_to_conv(state, FC)
    assert "classifier.6.weight" not in converted and "fc6.weight" in converted
    pool5 = torch.randn(2, 512, 7, 7)
    linear = F.linear(pool5.flatten(1), state["classifier.0.weight"], state["classifier.0.bias"])
    conv = F.conv2d(pool5, converted["fc6.weight"], converted["fc6.bias"])
    assert torch.allclose(conv.flatten(1), linear, rtol=1e-4, atol=1e-3)
    fc7_linear = F.linear(linear, state["classifier.3.weight"], state["classifier.3.bias"])
    fc7_conv = F.conv2d(conv, converted["fc7.weight"], converted["fc7.bias"])
    assert torch.allclose(fc7_conv.flatten(1), fc7_linear, rtol=1e-4, atol=1e-2)


def test_fcn_loads_weights_from_path(state, state_path):
    model = build_model("fcn8s", 3, backbone="vgg16", fc_channels=FC, weights=state_path)
    loaded = model.backbone.state_dict()
    for key, value in state.items():
        if key.startswith("features."):
            assert torch.equal(loaded[key], value), key
    assert torch.equal(loaded["fc6.weight"], state["classifier.0.weight"].reshape(FC, 512, 7, 7))
    assert torch.equal(loaded["fc7.weight"].flatten(1), state["classifier.3.weight"])
    assert torch.equal(loaded["fc7.bias"], state["classifier.3.bias"])


def test_width_mismatch_is_explained(state_path):
    with pytest.raises(ValueError, match=f"Fix: pass fc_channels={FC}"):
        build_model("fcn32s", 3, backbone="vgg16", fc_channels=8, weights=state_path)


def test_feature_strides():
    backbone = VGG16Backbone(fc_channels=FC).eval()
    with torch.no_grad():
        pool3, pool4, fc7 = backbone(torch.randn(1, 3, 96, 64))
    assert pool3.shape == (1, 256, 12, 8)
    assert pool4.shape == (1, 512, 6, 4)
    assert fc7.shape == (1, FC, 3, 2)
