"""U-Net (Ronneberger et al., MICCAI 2015) with a ResNet encoder, from segmentation-models-pytorch.

The encoder-decoder with skip connections at every stride is the closest relative of RefineNet's
multi-path refinement among the baselines (paper §2). smp's Unet needs input sides that are
multiples of 32: `SmpSegmenter` zero-pads the input and crops the logits back.

ImageNet weights never come from smp (it would download from the Hugging Face Hub): the encoder is
built with ``encoder_weights=None`` and torchvision's ResNet weights, whose key names smp's ResNet
encoders share, are loaded into it (`load_encoder_weights`).
"""

from __future__ import annotations

import inspect
import os

import torch
from torch import nn

from baselines import crop_to, pad_to_multiple
from refinenet.backbones import parse_resnet_name, resolve_weights
from refinenet.registry import register_model

UNET_DECODER_CHANNELS = (256, 128, 64, 32, 16)


def torchvision_resnet_weights(backbone: str):
    """torchvision's ``ResNet{depth}_Weights.IMAGENET1K_V1`` for ``backbone`` (e.g. ``"resnet101"``)."""
    from torchvision.models import get_weight

    return get_weight(f"ResNet{parse_resnet_name(backbone)}_Weights.IMAGENET1K_V1")


def load_encoder_weights(encoder: nn.Module, backbone: str, weights: str | os.PathLike | None) -> None:
    """Load ImageNet (``"imagenet"``) or saved (path) torchvision ResNet weights into an smp encoder."""
    state = resolve_weights(weights, torchvision_resnet_weights(backbone))
    if state is None:
        return
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    # smp's ResNetEncoder.load_state_dict returns None: call nn.Module's to see what did not fit.
    missing, unexpected = nn.Module.load_state_dict(encoder, state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"Weights do not fit the smp {backbone} encoder: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}. Fix: pass a state dict saved from torchvision's {backbone}."
        )


def smp_kwargs(model_class: type, **wanted) -> dict:
    """Keep the keyword arguments ``model_class`` accepts (smp >= 0.3.4 lacks some of 0.6's options).

    An option that is not supported and differs from its default is an error naming the smp version.
    """
    import segmentation_models_pytorch as smp

    params = inspect.signature(model_class.__init__).parameters
    kept = {}
    for key, (value, default) in wanted.items():
        if key in params:
            kept[key] = value
        elif value != default:
            raise ValueError(
                f"segmentation-models-pytorch {smp.__version__} has no {model_class.__name__} option "
                f"{key!r} (asked for {value!r}). Fix: upgrade to segmentation-models-pytorch>=0.5."
            )
    return kept


class SmpSegmenter(nn.Module):
    """An smp segmentation model that takes any input size (zero-pad to ``multiple``, crop logits back).

    ``backbone`` is smp's encoder (the ImageNet-initialisable part); ``net`` is the smp model.
    """

    def __init__(self, net: nn.Module, multiple: int) -> None:
        super().__init__()
        self.net = net
        self.multiple = multiple

    @property
    def backbone(self) -> nn.Module:
        return self.net.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return crop_to(self.net(pad_to_multiple(x, self.multiple)), size)


@register_model("unet")
def unet(
    num_classes: int,
    *,
    backbone: str = "resnet101",
    weights: str | os.PathLike | None = None,
    decoder_channels: tuple[int, ...] = UNET_DECODER_CHANNELS,
) -> SmpSegmenter:
    """smp ``Unet`` on a ResNet encoder (5 decoder stages with BatchNorm, nearest upsampling)."""
    import segmentation_models_pytorch as smp

    parse_resnet_name(backbone)
    if len(decoder_channels) != 5:
        raise ValueError(
            f"decoder_channels needs one width per decoder stage (5), got {tuple(decoder_channels)!r}."
        )
    net = smp.Unet(
        encoder_name=backbone,
        encoder_weights=None,
        decoder_channels=tuple(decoder_channels),
        classes=num_classes,
    )
    load_encoder_weights(net.encoder, backbone, weights)
    return SmpSegmenter(net, multiple=32)
