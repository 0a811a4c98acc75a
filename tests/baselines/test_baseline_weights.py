"""Backbone weights for the ResNet baselines: a saved torchvision state dict, the ImageNet cache path."""

from __future__ import annotations

import pytest
import torch
import torchvision

from refinenet.registry import build_model

RESNET_BASELINES = ["fcn8s", "deeplabv2", "unet", "deeplabv3"]


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.fixture(scope="module")
def resnet18_path(resnet18_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(resnet18_state, path)
    return path


def _backbone_tensor(backbone: torch.nn.Module, key: str) -> torch.Tensor:
    """The tensor for torchvision key ``key`` in either an smp encoder or a ResNetBackbone."""
    state = backbone.state_dict()
    if key in state:
        return state[key]
    renamed = key.replace("conv1.", "stem.0.", 1).replace("bn1.", "stem.1.", 1)
    return state[renamed]


def _assert_loaded(model: torch.nn.Module, reference: dict[str, torch.Tensor]) -> None:
    compared = 0
    for key, value in reference.items():
        if key.startswith("fc."):
            continue
        assert torch.equal(_backbone_tensor(model.backbone, key), value), key
        compared += 1
    assert compared == len(reference) - 2


@pytest.mark.parametrize("name", RESNET_BASELINES)
def test_weights_from_a_saved_state_dict(name, resnet18_state, resnet18_path):
    _assert_loaded(build_model(name, 3, backbone="resnet18", weights=resnet18_path), resnet18_state)


@pytest.mark.parametrize("name", ["unet", "deeplabv2"])
def test_imagenet_weights_come_from_the_torch_cache(name, resnet18_state, tmp_path, monkeypatch):
    """weights="imagenet" reads torchvision's IMAGENET1K_V1 file from $TORCH_HOME (no network, no smp hub)."""
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(resnet18_state, cache / url.rsplit("/", 1)[-1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _assert_loaded(build_model(name, 3, backbone="resnet18", weights="imagenet"), resnet18_state)


@pytest.mark.parametrize("name", ["unet", "deeplabv2"])
def test_weights_of_another_depth_are_rejected(name, tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="do not fit"):
        build_model(name, 3, backbone="resnet18", weights=path)


def test_missing_weights_file_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model("unet", 3, backbone="resnet18", weights=tmp_path / "nope.pth")
