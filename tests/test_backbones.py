"""ResNetBackbone (paper §3.1): strides and widths per output stride, and its three weight sources."""

from __future__ import annotations

import os
import urllib.error

import pytest
import torch
import torch.hub
from torchvision.models import ResNet18_Weights, resnet18

from refinenet.backbones import PretrainedWeightsUnavailable, ResNetBackbone

SIZE = 64


def strides(backbone: ResNetBackbone) -> list[int]:
    features = backbone(torch.randn(1, 3, SIZE, SIZE))
    assert [f.shape[1] for f in features] == list(backbone.out_channels)
    return [SIZE // f.shape[-1] for f in features]


def test_resnet18_blocks_at_strides_4_to_32():
    backbone = ResNetBackbone("resnet18").eval()
    assert backbone.out_channels == (64, 128, 256, 512)
    assert strides(backbone) == [4, 8, 16, 32]


@pytest.mark.parametrize(
    ("output_stride", "expected"), [(32, [4, 8, 16, 32]), (16, [4, 8, 16, 16]), (8, [4, 8, 8, 8])]
)
def test_resnet50_output_strides(output_stride, expected):
    backbone = ResNetBackbone("resnet50", output_stride=output_stride).eval()
    assert backbone.out_channels == (256, 512, 1024, 2048)
    assert strides(backbone) == expected


def test_odd_input_sizes_use_ceil_division():
    features = ResNetBackbone("resnet18").eval()(torch.randn(1, 3, 65, 47))
    assert [tuple(f.shape[-2:]) for f in features] == [(17, 12), (9, 6), (5, 3), (3, 2)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backbone": "resnet42"}, "Valid backbones: resnet18, resnet34"),
        ({"backbone": "resnet18", "output_stride": 16}, "use resnet50/101/152"),
        ({"backbone": "resnet50", "output_stride": 4}, "32, 16 or 8"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNetBackbone(**kwargs)


def saved_resnet18_state(seed: int = 7) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return resnet18().state_dict()  # includes fc.*, which the backbone drops


def assert_loaded(backbone: ResNetBackbone, state: dict[str, torch.Tensor]) -> None:
    loaded = {
        "conv1.weight": backbone.stem[0].weight,
        "bn1.running_mean": backbone.stem[1].running_mean,
        "layer1.0.conv1.weight": backbone.layer1[0].conv1.weight,
        "layer4.1.bn2.weight": backbone.layer4[1].bn2.weight,
    }
    for key, tensor in loaded.items():
        assert torch.equal(tensor, state[key]), key


def test_weights_from_a_saved_state_dict(tmp_path):
    state = saved_resnet18_state()
    torch.save(state, tmp_path / "resnet18.pt")
    assert_loaded(ResNetBackbone("resnet18", weights=tmp_path / "resnet18.pt"), state)
    assert_loaded(ResNetBackbone("resnet18", weights=str(tmp_path / "resnet18.pt")), state)


def test_missing_or_mismatched_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ResNetBackbone("resnet18", weights=tmp_path / "absent.pt")
    torch.save(saved_resnet18_state(), tmp_path / "resnet18.pt")
    with pytest.raises(ValueError, match="do not fit resnet50"):
        ResNetBackbone("resnet50", weights=tmp_path / "resnet18.pt")


@pytest.fixture
def offline_torch_home(tmp_path, monkeypatch):
    """TORCH_HOME in tmp_path, and any download attempt fails as it would offline."""

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError(f"offline test: refused to download {url}")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub" / "checkpoints"


def test_imagenet_weights_from_the_seeded_torch_hub_cache(offline_torch_home):
    state = saved_resnet18_state(seed=11)
    offline_torch_home.mkdir(parents=True)
    torch.save(state, offline_torch_home / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url))
    assert_loaded(ResNetBackbone("resnet18", weights="imagenet"), state)


def test_imagenet_weights_absent_offline_raise_a_clear_error(offline_torch_home):
    file_name = os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    with pytest.raises(PretrainedWeightsUnavailable) as error:
        ResNetBackbone("resnet18", weights="imagenet")
    message = str(error.value)
    assert str(offline_torch_home / file_name) in message
    assert "weights=None" in message
