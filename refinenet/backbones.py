"""ImageNet backbones split by output resolution (paper §3.1: "the ResNet is split into 4 blocks").

`ResNetBackbone` returns the outputs of the four ResNet blocks at strides 4, 8, 16 and 32 (high
resolution first), with their channel counts in `out_channels`. Blocks 3 and 4 can be dilated
instead of strided (output stride 16 or 8) for the DeepLab baselines.

Weights: ``None`` (random init), ``"imagenet"`` (torchvision's ImageNet-1k weights, read from the
torch hub cache, downloaded only when the network is reachable) or a path to a saved state dict.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import torch
from torch import nn

RESNET_DEPTHS = (18, 34, 50, 101, 152)
BACKBONES = tuple(f"resnet{d}" for d in RESNET_DEPTHS)


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights are neither in the torch cache nor downloadable."""


def torch_hub_checkpoint_dir() -> Path:
    """The folder torchvision reads cached weights from (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def load_imagenet_state_dict(weights_enum) -> dict[str, torch.Tensor]:
    """Load a torchvision ``WeightsEnum`` entry from the torch cache, downloading if possible.

    Raises `PretrainedWeightsUnavailable` with the exact file name and folder to seed when the
    file is absent and the download fails (no network).
    """
    url = weights_enum.url
    file_name = os.path.basename(url)
    cache_dir = torch_hub_checkpoint_dir()
    try:
        return torch.hub.load_state_dict_from_url(url, progress=False, weights_only=True)
    except (urllib.error.URLError, OSError, ConnectionError) as error:
        raise PretrainedWeightsUnavailable(
            f"ImageNet weights {file_name!r} are not in the torch cache and could not be downloaded "
            f"({error}). Fix: on a machine with network, download {url} and copy it to "
            f"{cache_dir / file_name} (or set TORCH_HOME to a folder whose hub/checkpoints/ holds it), "
            f"or pass weights=None to train from scratch."
        ) from error


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict saved with ``torch.save(model.state_dict(), path)`` (tensors only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Backbone weights file {path} does not exist. Fix: pass weights=None, weights='imagenet', "
            f"or the path of a state dict saved with torch.save(model.state_dict(), path)."
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def resolve_weights(weights: str | os.PathLike | None, weights_enum) -> dict[str, torch.Tensor] | None:
    """Turn a ``weights`` argument into a state dict (or None for random init)."""
    if weights is None:
        return None
    if weights == "imagenet":
        return load_imagenet_state_dict(weights_enum)
    return load_state_dict_file(weights)


def _torchvision_resnet(depth: int):
    from torchvision import models

    builders = {
        18: (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
        34: (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1),
        50: (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1),
        101: (models.resnet101, models.ResNet101_Weights.IMAGENET1K_V1),
        152: (models.resnet152, models.ResNet152_Weights.IMAGENET1K_V1),
    }
    return builders[depth]


def parse_resnet_name(backbone: str) -> int:
    """``"resnet101"`` -> 101, with an error listing the valid names."""
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown backbone {backbone!r}. Valid backbones: {', '.join(BACKBONES)}.")
    return int(backbone.removeprefix("resnet"))


class ResNetBackbone(nn.Module):
    """A torchvision ResNet cut into its four blocks (paper §3.1, Fig. 2).

    ``forward(x)`` returns ``[block1, block2, block3, block4]`` at strides 4, 8, 16, 32 (or
    4, 8, 8, 8 with ``output_stride=8``; 4, 8, 16, 16 with ``output_stride=16``).

    Args:
        backbone: one of ``BACKBONES``.
        weights: None, ``"imagenet"`` or a path to a torchvision-layout state dict.
        output_stride: 32 (plain ResNet), 16 or 8 (dilated block-4, or block-3 and block-4).
    """

    def __init__(
        self,
        backbone: str = "resnet101",
        *,
        weights: str | os.PathLike | None = None,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        depth = parse_resnet_name(backbone)
        dilation = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}
        if output_stride not in dilation:
            raise ValueError(f"output_stride must be 32, 16 or 8, got {output_stride!r}.")
        if output_stride != 32 and depth < 50:
            raise ValueError(
                f"Dilated {backbone} is not supported by torchvision (BasicBlock has no dilation); "
                f"use resnet50/101/152 for output_stride={output_stride}."
            )
        builder, weights_enum = _torchvision_resnet(depth)
        kwargs = {"replace_stride_with_dilation": dilation[output_stride]} if depth >= 50 else {}
        net = builder(weights=None, **kwargs)
        state = resolve_weights(weights, weights_enum)
        if state is not None:
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            fix = f"Fix: pass a state dict saved from torchvision's {backbone}."
            try:
                missing, unexpected = net.load_state_dict(state, strict=False)
            except RuntimeError as error:  # shape mismatches raise even with strict=False
                raise ValueError(f"Weights do not fit {backbone}: {error}. {fix}") from error
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise ValueError(
                    f"Weights do not fit {backbone}: missing {missing[:5]}, "
                    f"unexpected {unexpected[:5]}. {fix}"
                )
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if depth >= 50 else 1
        self.out_channels: tuple[int, int, int, int] = tuple(c * expansion for c in (64, 128, 256, 512))
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [c1, c2, c3, c4]
