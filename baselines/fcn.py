"""FCN-32s / FCN-16s / FCN-8s (Long et al., "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015, §4.2, Fig. 3): the paper's first baseline (RefineNet Tables 2-7 compare with FCN-8s).

A 1x1 class-score layer on the stride-32 features (``score_fr``) is upsampled to the input
(FCN-32s). FCN-16s adds the scores of a 1x1 layer on the stride-16 features (``score_pool4``)
after upsampling the stride-32 scores to their size; FCN-8s adds stride-8 scores (``score_pool3``)
the same way. No dilation anywhere: this is the "deconvolution on coarse features" design.

Backbones: ``vgg16`` (the original: pool3, pool4, fc7) or ``resnet18``..``resnet152`` (block-2,
block-3, block-4). Differences from the original Caffe nets (see docs/baselines.md): all
upsampling is fixed bilinear, resized to the partner tensor's size at forward time (no learned 2x
deconvolutions, no crop layers); no 100-pixel input padding (VGG inputs are zero-padded to a
multiple of 32 and the output cropped back); the skip score layers start at zero as in FCN's staged
training, so FCN-16s/8s start out computing FCN-32s, but everything is trained at once.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from baselines import crop_to, pad_to_multiple, resize_to
from baselines.vgg import FC_CHANNELS, VGG16Backbone
from refinenet.backbones import BACKBONES, ResNetBackbone
from refinenet.registry import register_model

FCN_BACKBONES = (*BACKBONES, "vgg16")
SKIPS = {"fcn32s": 0, "fcn16s": 1, "fcn8s": 2}


class FCN(nn.Module):
    """Class scores on the stride-32 features, refined by 0, 1 or 2 skip connections (FCN §4.2).

    Args:
        backbone: returns a list whose last three entries are the stride-8, -16 and -32 features.
        in_channels: channels of those three feature maps (stride 8, 16, 32).
        num_classes: number of output classes.
        skips: 0 (FCN-32s), 1 (FCN-16s, + stride 16) or 2 (FCN-8s, + stride 16 and 8).
        input_multiple: zero-pad the input to a multiple of this before the backbone (1: none).
    """

    def __init__(
        self,
        backbone: nn.Module,
        in_channels: tuple[int, int, int],
        num_classes: int,
        *,
        skips: int,
        input_multiple: int = 1,
    ) -> None:
        super().__init__()
        if skips not in (0, 1, 2):
            raise ValueError(f"skips must be 0 (FCN-32s), 1 (FCN-16s) or 2 (FCN-8s), got {skips!r}.")
        self.backbone = backbone
        self.skips = skips
        self.input_multiple = input_multiple
        channels_8, channels_16, channels_32 = in_channels
        self.score_fr = nn.Conv2d(channels_32, num_classes, kernel_size=1)
        nn.init.normal_(self.score_fr.weight, std=0.01)
        nn.init.zeros_(self.score_fr.bias)
        self.score_pool4 = nn.Conv2d(channels_16, num_classes, kernel_size=1) if skips >= 1 else None
        self.score_pool3 = nn.Conv2d(channels_8, num_classes, kernel_size=1) if skips >= 2 else None
        for layer in (self.score_pool4, self.score_pool3):
            if layer is not None:  # FCN §4.2: skip score layers are zero-initialised
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = pad_to_multiple(x, self.input_multiple)
        features_8, features_16, features_32 = self.backbone(x)[-3:]
        scores = self.score_fr(features_32)
        if self.score_pool4 is not None:
            scores = resize_to(scores, features_16.shape[-2:]) + self.score_pool4(features_16)
        if self.score_pool3 is not None:
            scores = resize_to(scores, features_8.shape[-2:]) + self.score_pool3(features_8)
        return crop_to(resize_to(scores, x.shape[-2:]), size)


def build_fcn(
    num_classes: int,
    *,
    skips: int,
    backbone: str = "resnet101",
    weights: str | os.PathLike | None = None,
    fc_channels: int = FC_CHANNELS,
) -> FCN:
    """Build an FCN with ``skips`` skip connections on ``backbone`` (see `FCN`)."""
    if backbone == "vgg16":
        encoder = VGG16Backbone(weights=weights, fc_channels=fc_channels)
        return FCN(encoder, encoder.out_channels, num_classes, skips=skips, input_multiple=32)
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown FCN backbone {backbone!r}. Valid backbones: {', '.join(FCN_BACKBONES)}.")
    if fc_channels != FC_CHANNELS:
        raise ValueError(
            f"fc_channels applies to backbone='vgg16' only (fc6/fc7), got fc_channels={fc_channels} with "
            f"backbone={backbone!r}. Fix: drop fc_channels or use backbone='vgg16'."
        )
    encoder = ResNetBackbone(backbone, weights=weights, output_stride=32)
    return FCN(encoder, encoder.out_channels[1:], num_classes, skips=skips)


@register_model("fcn32s")
def fcn32s(
    num_classes: int,
    *,
    backbone: str = "resnet101",
    weights: str | os.PathLike | None = None,
    fc_channels: int = FC_CHANNELS,
) -> FCN:
    """FCN-32s: stride-32 scores upsampled to the input (FCN §4.1)."""
    return build_fcn(num_classes, skips=0, backbone=backbone, weights=weights, fc_channels=fc_channels)


@register_model("fcn16s")
def fcn16s(
    num_classes: int,
    *,
    backbone: str = "resnet101",
    weights: str | os.PathLike | None = None,
    fc_channels: int = FC_CHANNELS,
) -> FCN:
    """FCN-16s: FCN-32s + a skip from the stride-16 features (FCN §4.2)."""
    return build_fcn(num_classes, skips=1, backbone=backbone, weights=weights, fc_channels=fc_channels)


@register_model("fcn8s")
def fcn8s(
    num_classes: int,
    *,
    backbone: str = "resnet101",
    weights: str | os.PathLike | None = None,
    fc_channels: int = FC_CHANNELS,
) -> FCN:
    """FCN-8s: FCN-16s + a skip from the stride-8 features (FCN §4.2)."""
    return build_fcn(num_classes, skips=2, backbone=backbone, weights=weights, fc_channels=fc_channels)
