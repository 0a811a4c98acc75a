"""VGG-16 cut for FCN (Long et al., CVPR 2015, §4.1-4.2): pool3, pool4 and fc7 as convolutions.

The ImageNet classifier's fc6 (25088 -> 4096) and fc7 (4096 -> 4096) become a 7x7 and a 1x1
convolution ("convolutionalization", FCN §3.1) carrying the same weights; fc8 is dropped (FCN
replaces it with a class-score layer). Unlike the original Caffe nets there is no 100-pixel input
padding: fc6 uses "same" padding (3) and the FCN model pads its input to a multiple of 32 instead,
so every input size works and the feature maps align exactly with the input grid.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from refinenet.backbones import resolve_weights

FC_CHANNELS = 4096
# Indices in torchvision's vgg16().features of the max-pool layers closing blocks 3, 4 and 5.
_POOL3, _POOL4, _POOL5 = 16, 23, 30


def _vgg16_weights_enum():
    from torchvision.models import VGG16_Weights

    return VGG16_Weights.IMAGENET1K_V1


def convert_classifier_to_conv(state: dict[str, torch.Tensor], fc_channels: int) -> dict[str, torch.Tensor]:
    """Map a torchvision ``vgg16`` state dict to `VGG16Backbone` keys (fc6/fc7 reshaped to conv kernels).

    A state dict that is already in `VGG16Backbone` layout (``fc6.weight`` present) is returned as is.
    ``classifier.6`` (the ImageNet fc8) is dropped.
    """
    if "fc6.weight" in state:
        return dict(state)
    if "classifier.0.weight" not in state or "classifier.3.weight" not in state:
        raise ValueError(
            "VGG-16 weights need 'classifier.0.*' and 'classifier.3.*' (fc6, fc7) besides 'features.*'. "
            "Fix: pass the state dict of torchvision's vgg16 (torch.save(vgg16().state_dict(), path))."
        )
    converted = {k: v for k, v in state.items() if k.startswith("features.")}
    fc6, fc7 = state["classifier.0.weight"], state["classifier.3.weight"]
    if fc6.shape != (fc_channels, 512 * 7 * 7) or fc7.shape != (fc_channels, fc_channels):
        raise ValueError(
            f"VGG-16 fc6/fc7 weights have shapes {tuple(fc6.shape)} and {tuple(fc7.shape)}; the backbone was "
            f"built with fc_channels={fc_channels}, which needs ({fc_channels}, 25088) and "
            f"({fc_channels}, {fc_channels}). Fix: pass fc_channels={fc6.shape[0]} "
            "(4096 for ImageNet weights)."
        )
    converted["fc6.weight"] = fc6.reshape(fc_channels, 512, 7, 7)
    converted["fc6.bias"] = state["classifier.0.bias"]
    converted["fc7.weight"] = fc7.reshape(fc_channels, fc_channels, 1, 1)
    converted["fc7.bias"] = state["classifier.3.bias"]
    return converted


class VGG16Backbone(nn.Module):
    """VGG-16 conv1_1..pool5 + fc6/fc7 as convolutions (FCN §3.1, §4.1).

    ``forward(x)`` returns ``[pool3, pool4, fc7]`` at strides 8, 16, 32 with ``out_channels``
    ``(256, 512, fc_channels)``. Inputs should have sides that are multiples of 32 (the FCN model
    pads them): torchvision's max pooling floors odd sides, dropping the last row or column.

    Args:
        weights: None, ``"imagenet"`` (torchvision ``VGG16_Weights.IMAGENET1K_V1``) or a path to a
            torchvision ``vgg16`` state dict (or one saved from this module).
        fc_channels: width of fc6/fc7 (4096 in VGG-16; smaller only for quick tests, no ImageNet weights).
        dropout: dropout after fc6 and fc7 (0.5 in FCN, as in VGG).
    """

    def __init__(
        self,
        *,
        weights: str | os.PathLike | None = None,
        fc_channels: int = FC_CHANNELS,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        if not isinstance(fc_channels, int) or fc_channels < 1:
            raise ValueError(f"fc_channels must be a positive integer, got {fc_channels!r}.")
        self.features = make_layers(cfgs["D"])  # torchvision vgg16().features, same keys
        self.fc6 = nn.Conv2d(512, fc_channels, kernel_size=7, padding=3)
        self.relu6 = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, kernel_size=1)
        self.relu7 = nn.ReLU(inplace=True)
        self.drop7 = nn.Dropout(dropout)
        self.out_channels: tuple[int, int, int] = (256, 512, fc_channels)
        self.output_stride = 32
        self._init_like_torchvision()

        state = resolve_weights(weights, _vgg16_weights_enum())
        if state is not None:
            state = convert_classifier_to_conv(state, fc_channels)
            missing, unexpected = self.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(
                    f"Weights do not fit VGG-16: missing {missing[:5]}, unexpected {unexpected[:5]}. "
                    "Fix: pass a state dict saved from torchvision's vgg16."
                )

    def _init_like_torchvision(self) -> None:
        # torchvision VGG: conv kaiming-normal (fan_out), linear (fc6/fc7) normal(0, 0.01), zero biases.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                if module in (self.fc6, self.fc7):
                    nn.init.normal_(module.weight, 0, 0.01)
                else:
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in (_POOL3, _POOL4):
                outputs.append(x)
        x = self.drop6(self.relu6(self.fc6(x)))
        x = self.drop7(self.relu7(self.fc7(x)))
        outputs.append(x)
        return outputs
