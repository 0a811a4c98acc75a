"""Baselines the paper compares RefineNet with (paper §4, Tables 2-7), on the shared model registry.

- ``fcn32s`` / ``fcn16s`` / ``fcn8s``: FCN (Long et al., CVPR 2015) on ResNet or VGG-16 (`fcn.py`).
- ``unet``: U-Net with a ResNet encoder (segmentation-models-pytorch, `unet.py`).
- ``deeplabv2``: dilated ResNet (output stride 8) + ASPP-L, the dilated-convolution design that the
  paper argues against (§1, §2; `deeplab.py`).
- ``deeplabv3``: DeepLab-v3 (segmentation-models-pytorch, `deeplab.py`).

Shared helpers for input sizes that are not multiples of a model's stride live here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad ``x`` at the bottom and right so that its height and width are multiples of ``multiple``.

    The inputs are normalised images, so zero is the dataset mean colour. `crop_to` undoes it.
    """
    height, width = x.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h))


def crop_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Keep the top-left ``size`` = (height, width) of ``x`` (the inverse of `pad_to_multiple`)."""
    return x[..., : size[0], : size[1]]


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinearly resize ``x`` to ``size`` (no-op when it already has that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
