"""The model contract (refinenet/registry.py) for every registered model: shapes, gradients, errors."""

from __future__ import annotations

import importlib
import importlib.util

import pytest
import torch
import torch.nn.functional as F

from refinenet import registry
from refinenet.registry import build_model, list_models, model_options

NUM_CLASSES = 5
# Odd on both sides and not a multiple of any stride: models must pad/resize internally.
HEIGHT, WIDTH = 65, 47
# refinenet/model.py is written alongside the baselines; until it exists only its test is skipped.
REFINENET_MISSING = importlib.util.find_spec("refinenet.model") is None


def _model_names() -> list[str]:
    if not REFINENET_MISSING:
        return list_models()
    for module in registry._BUILDER_MODULES:
        if module != "refinenet.model":
            importlib.import_module(module)
    return sorted({*registry._REGISTRY, "refinenet"})


MODEL_NAMES = _model_names()


@pytest.fixture(autouse=True)
def _without_missing_refinenet(monkeypatch):
    if REFINENET_MISSING:
        modules = tuple(m for m in registry._BUILDER_MODULES if m != "refinenet.model")
        monkeypatch.setattr(registry, "_BUILDER_MODULES", modules)


def _tiny(name: str, **extra) -> torch.nn.Module:
    if name == "refinenet" and REFINENET_MISSING:
        pytest.skip("refinenet/model.py does not exist yet")
    options = {"weights": None, **extra}
    if "backbone" in model_options(name) and "backbone" not in extra:
        options["backbone"] = "resnet18"
    return build_model(name, NUM_CLASSES, **options)


def test_all_models_registered():
    assert {"refinenet", "fcn32s", "fcn16s", "fcn8s", "unet", "deeplabv2", "deeplabv3"} <= set(MODEL_NAMES)


def _check_contract(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    # Batch 2 in training: deeplabv3's image-pooling BatchNorm needs more than one value per channel.
    x = torch.randn(2, 3, HEIGHT, WIDTH)
    model.train()
    logits = model(x)
    assert logits.shape == (2, NUM_CLASSES, HEIGHT, WIDTH)
    assert torch.isfinite(logits).all()
    target = torch.randint(0, NUM_CLASSES, (2, HEIGHT, WIDTH))
    F.cross_entropy(logits, target).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    zero_grad = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.any()]
    assert not no_grad, f"parameters without gradient: {no_grad[:10]}"
    assert not zero_grad, f"parameters with an all-zero gradient: {zero_grad[:10]}"

    backbone = model.backbone
    assert isinstance(backbone, torch.nn.Module)
    model_params = {id(p) for p in model.parameters()}
    backbone_params = [p for p in backbone.parameters()]
    assert backbone_params and {id(p) for p in backbone_params} <= model_params
    assert len(backbone_params) < len(model_params), "the head must have parameters besides the backbone"

    model.eval()
    with torch.no_grad():
        single = model(x[:1])
    assert single.shape == (1, NUM_CLASSES, HEIGHT, WIDTH)
    assert torch.isfinite(single).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_contract(name):
    _check_contract(_tiny(name))


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
def test_fcn_vgg16_contract(name):
    # fc6/fc7 at 64 channels instead of 4096 keep the test small; the layout is the faithful one.
    _check_contract(_tiny(name, backbone="vgg16", fc_channels=64))


def test_unknown_model_lists_valid_names():
    with pytest.raises(KeyError, match="Valid models: .*deeplabv2.*fcn8s.*unet"):
        build_model("segnet", NUM_CLASSES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_unknown_option_lists_valid_options(name):
    if name == "refinenet" and REFINENET_MISSING:
        pytest.skip("refinenet/model.py does not exist yet")
    with pytest.raises(TypeError, match=r"'bogus'.*Valid options: .*backbone.*weights"):
        build_model(name, NUM_CLASSES, bogus=1)


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, "5", None])
@pytest.mark.parametrize("name", ["fcn8s", "deeplabv2", "unet"])
def test_bad_num_classes(name, num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        build_model(name, num_classes, backbone="resnet18")
