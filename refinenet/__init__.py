"""RefineNet (Lin et al., CVPR 2017): blocks, ResNet backbones, the model and the shared registry."""

from refinenet.backbones import BACKBONES, PretrainedWeightsUnavailable, ResNetBackbone
from refinenet.model import CASCADES, PRESETS, MultiScaleBackbone, RefineNet, refinenet
from refinenet.registry import build_model, list_models, register_model

__all__ = [
    "BACKBONES",
    "CASCADES",
    "PRESETS",
    "MultiScaleBackbone",
    "PretrainedWeightsUnavailable",
    "RefineNet",
    "ResNetBackbone",
    "build_model",
    "list_models",
    "refinenet",
    "register_model",
]
