"""DeepLab baselines: the dilated-convolution design the paper argues against (§1, §2, Tables 3-7).

- ``deeplabv2`` (Chen et al., TPAMI 2017, §3.3 "ASPP-L" as released for ResNet-101): a ResNet whose
  block-3 and block-4 use dilation instead of stride (output stride 8), and four parallel 3x3 class-
  score convolutions with dilation rates 6, 12, 18, 24 on block-4, summed, then upsampled bilinearly.
- ``deeplabv3`` (Chen et al., arXiv 1706.05587): smp's DeepLabV3 at output stride 8.

torchvision cannot dilate ResNet-18/34 (BasicBlock); `dilate_basic_blocks` does it by editing the
convolutions after construction, so the quick suite can run ``deeplabv2`` on ``resnet18``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from baselines.unet import SmpSegmenter, load_encoder_weights, smp_kwargs
from refinenet.backbones import ResNetBackbone, parse_resnet_name
from refinenet.registry import register_model

DEEPLABV2_RATES = (6, 12, 18, 24)
DEEPLABV3_RATES = (12, 24, 36)
# Dilation of (block-3, block-4) per output stride, as torchvision's replace_stride_with_dilation.
_DILATIONS = {8: (2, 4), 16: (1, 2)}


def dilate_basic_blocks(backbone: ResNetBackbone, output_stride: int) -> ResNetBackbone:
    """Replace the strides of block-3/4 of a BasicBlock ResNet (18/34) with dilation, in place.

    Follows torchvision's rule for Bottleneck ResNets: the first residual unit of a dilated block
    keeps the previous block's dilation, the others take the new one; 3x3 padding equals dilation.
    """
    if output_stride not in _DILATIONS:
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride!r}.")
    previous = 1
    for layer, dilation in zip((backbone.layer3, backbone.layer4), _DILATIONS[output_stride], strict=True):
        if dilation == 1:
            continue
        for index, unit in enumerate(layer):
            rate = previous if index == 0 else dilation
            for conv in (unit.conv1, unit.conv2):
                conv.stride, conv.dilation, conv.padding = (1, 1), (rate, rate), (rate, rate)
            if unit.downsample is not None:
                unit.downsample[0].stride = (1, 1)
        previous = dilation
    backbone.output_stride = output_stride
    return backbone


def dilated_resnet(backbone: str, *, weights: str | os.PathLike | None, output_stride: int) -> ResNetBackbone:
    """A ResNet-18..152 with output stride 8 or 16 (dilated block-3/4), any depth."""
    if output_stride not in _DILATIONS:
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride!r}.")
    if parse_resnet_name(backbone) >= 50:
        return ResNetBackbone(backbone, weights=weights, output_stride=output_stride)
    return dilate_basic_blocks(ResNetBackbone(backbone, weights=weights), output_stride)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling, DeepLab-v2 "ASPP-L" (TPAMI 2017 §3.3, Fig. 4).

    One 3x3 class-score convolution per dilation rate on the same features; the scores are summed.
    """

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.rates = tuple(rates)
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=rate, dilation=rate)
            for rate in self.rates
        )
        for branch in self.branches:  # as the released prototxt: gaussian std 0.01, zero bias
            nn.init.normal_(branch.weight, std=0.01)
            nn.init.zeros_(branch.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.branches[0](x)
        for branch in self.branches[1:]:
            scores = scores + branch(x)
        return scores


class DeepLabV2(nn.Module):
    """Dilated ResNet + ASPP-L, scores upsampled bilinearly to the input size."""

    def __init__(self, backbone: ResNetBackbone, num_classes: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.aspp = ASPP(backbone.out_channels[-1], num_classes, rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.aspp(self.backbone(x)[-1])
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _check_rates(rates: Sequence[int]) -> tuple[int, ...]:
    rates = tuple(rates)
    if not rates or not all(isinstance(r, int) and r >= 1 for r in rates):
        raise ValueError(f"rates must be a non-empty sequence of positive integers, got {rates!r}.")
    return rates


@register_model("deeplabv2")
def deeplabv2(
    num_classes: int,
    *,
    backbone: str = "resnet101",
    weights: str | os.PathLike | None = None,
    output_stride: int = 8,
    rates: Sequence[int] = DEEPLABV2_RATES,
) -> DeepLabV2:
    """DeepLab-v2: dilated ResNet (output stride 8 or 16) + ASPP-L with ``rates`` (default 6/12/18/24)."""
    rates = _check_rates(rates)
    encoder = dilated_resnet(backbone, weights=weights, output_stride=output_stride)
    return DeepLabV2(encoder, num_classes, rates)


class _DeepLabV3Segmenter(SmpSegmenter):
    """smp DeepLabV3 with a clear error for batch-1 training (its image-pooling branch has BatchNorm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1 and any(
            m.training for m in self.net.decoder.modules() if isinstance(m, nn.BatchNorm2d)
        ):
            raise ValueError(
                "deeplabv3 cannot train on a batch of 1: the BatchNorm of its image-pooling branch sees one "
                "value per channel. Fix: use a batch of 2 or more, or call model.eval()."
            )
        return super().forward(x)


@register_model("deeplabv3")
def deeplabv3(
    num_classes: int,
    *,
    backbone: str = "resnet101",
    weights: str | os.PathLike | None = None,
    output_stride: int = 8,
    rates: Sequence[int] = DEEPLABV3_RATES,
    decoder_channels: int = 256,
) -> SmpSegmenter:
    """smp ``DeepLabV3``: dilated ResNet (output stride 8 or 16), ASPP with ``rates`` + image pooling."""
    import segmentation_models_pytorch as smp

    parse_resnet_name(backbone)
    rates = _check_rates(rates)
    if output_stride not in _DILATIONS:
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride!r}.")
    options = smp_kwargs(
        smp.DeepLabV3,
        encoder_output_stride=(output_stride, 8),
        decoder_atrous_rates=(rates, DEEPLABV3_RATES),
    )
    net = smp.DeepLabV3(
        encoder_name=backbone,
        encoder_weights=None,
        decoder_channels=decoder_channels,
        classes=num_classes,
        **options,
    )
    load_encoder_weights(net.encoder, backbone, weights)
    return _DeepLabV3Segmenter(net, multiple=output_stride)
