"""RefineNet model: cascade variants (Table 9), presets, ablation knobs, pinned parameter counts."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from refinenet import registry
from refinenet.backbones import ResNetBackbone
from refinenet.blocks import ChainedResidualPooling
from refinenet.model import CASCADES, PRESETS, RefineNet, refinenet

TINY = {"backbone": "resnet18", "feature_widths": (32, 16, 16, 16)}
ODD_SIZES = [(65, 47), (33, 33)]

ABLATIONS = {
    "no-crp": {"crp_blocks": 0},
    "crp-1": {"crp_blocks": 1},
    "crp-4": {"crp_blocks": 4},
    "conv-pool": {"crp_order": "conv-pool"},
    "no-output-rcu": {"output_rcus": 0},
    "3-output-rcus": {"output_rcus": 3},
    "dropout": {"dropout": 0.5},
    "3x3-classifier": {"classifier_kernel": 3},
    "wider": {"feature_widths": (32, 32, 16, 16)},
    "resnet34": {"backbone": "resnet34"},
}
VARIANTS = {f"cascade={c}": {"cascade": c} for c in CASCADES if c != "4-cascaded"}
VARIANTS |= {"preset=released": {"preset": "released"}} | ABLATIONS


def tiny(**options) -> RefineNet:
    torch.manual_seed(0)
    return refinenet(5, **(TINY | options))


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def signature(model: nn.Module) -> tuple:
    """Parameter count and the module graph (types in order, with dropout rates)."""
    graph = tuple(
        (type(m).__name__, getattr(m, "p", None), getattr(m, "kernel_size", None)) for m in model.modules()
    )
    return n_params(model), graph


def meta_count(**options) -> int:
    with torch.device("meta"):
        return n_params(refinenet(21, **options))


def check_forward_backward(model: RefineNet, size: tuple[int, int]) -> None:
    model.train()
    x = torch.randn(2, 3, *size)
    logits = model(x)
    assert logits.shape == (2, 5, *size)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


# --- every variant and ablation runs on odd sizes and trains every parameter ---------------------


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("cascade", sorted(CASCADES))
def test_cascades_and_presets_odd_sizes_and_gradients(cascade, preset):
    model = tiny(cascade=cascade, preset=preset)
    for size in ODD_SIZES:
        model.zero_grad()
        check_forward_backward(model, size)


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablations_odd_size_and_gradients(name):
    check_forward_backward(tiny(**ABLATIONS[name]), (65, 47))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_differs_structurally_from_the_standard_model(name):
    assert signature(tiny(**VARIANTS[name])) != signature(tiny())


def test_conv_pool_order_changes_the_output_for_the_same_weights():
    standard, improved = tiny(), tiny(crp_order="conv-pool")
    improved.load_state_dict(standard.state_dict())
    x = torch.randn(1, 3, 65, 47)
    standard.eval(), improved.eval()
    assert not torch.allclose(standard(x), improved(x))


def test_forward_is_the_bilinear_upsampled_low_res_output():
    model = tiny().eval()
    x = torch.randn(1, 3, 65, 47)
    low = model.forward_low_res(x)
    assert low.shape == (1, 5, 17, 12)  # stride 4 (ceil division through the ResNet)
    expected = F.interpolate(low, size=(65, 47), mode="bilinear", align_corners=False)
    torch.testing.assert_close(model(x), expected)


def test_two_scale_variant_feeds_both_resnets_to_every_refinenet():
    model = tiny(cascade="4-cascaded-2-scale").eval()
    assert model.backbone.path_group_ids == (1, 2, 3, 4, 1, 2, 3, 4)
    # RefineNet-4 fuses block-4 of both scales; RefineNet-3..1 the previous output and block-m of both.
    assert model.block_inputs == [[3, 7], [8, 2, 6], [9, 1, 5], [10, 0, 4]]
    features = model.backbone(torch.randn(1, 3, 65, 47))
    assert [f.shape[-2:] for f in features[:1] + features[4:5]] == [(20, 14), (10, 7)]  # 78x56 and 39x28
    assert model.forward_low_res(torch.randn(1, 3, 65, 47)).shape[-2:] == (20, 14)


def test_cascade_wiring():
    assert tiny(cascade="single").block_inputs == [[3, 2, 1, 0]]
    assert tiny(cascade="2-cascaded").block_inputs == [[3, 2], [4, 1, 0]]
    assert tiny().block_inputs == [[3], [4, 2], [5, 1], [6, 0]]


def test_eval_is_deterministic_with_dropout():
    model = tiny(preset="released").eval()
    x = torch.randn(1, 3, 33, 33)
    assert torch.equal(model(x), model(x))


def test_inplace_relus_give_the_same_gradients_as_out_of_place():
    x = torch.randn(1, 3, 33, 33)

    def grads(model):
        model.zero_grad()
        model(x).square().sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    model = tiny(preset="released", dropout=0.0)
    inplace = grads(model)
    for module in model.modules():
        if isinstance(module, ChainedResidualPooling):
            module.inplace = False
    for a, b in zip(inplace, grads(model), strict=True):
        torch.testing.assert_close(a, b)


# --- backbone contract and initialisation -------------------------------------------------------


@pytest.mark.parametrize("cascade", ["4-cascaded", "4-cascaded-2-scale"])
def test_backbone_holds_all_and_only_the_imagenet_parameters(cascade):
    model = tiny(cascade=cascade)
    resnet_keys = set(ResNetBackbone("resnet18").state_dict())
    backbone_keys = set(model.backbone.state_dict())
    if cascade == "4-cascaded":
        assert backbone_keys == resnet_keys
    else:
        assert backbone_keys == {f"resnets.{i}.{k}" for i in (0, 1) for k in resnet_keys}
    head_modules = [m for n, m in model.named_modules() if n and not n.startswith("backbone")]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in head_modules)  # the head has no BN (§3.2)


def test_new_convs_are_initialised_like_the_released_code():
    model = refinenet(21, backbone="resnet18", preset="released")
    weight = model.refinenets[0].chained_pooling.blocks[0].conv.weight
    assert abs(weight.std().item() - 0.01) < 0.001 and abs(weight.mean().item()) < 0.001
    biases = [m.bias for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
    assert biases and all(torch.count_nonzero(b) == 0 for b in biases)


def test_backbone_weights_from_a_state_dict_path(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(3)
    state = resnet18().state_dict()
    torch.save(state, tmp_path / "r18.pt")
    model = refinenet(5, **TINY, cascade="4-cascaded-2-scale", weights=tmp_path / "r18.pt")
    for resnet in model.backbone.resnets:
        assert torch.equal(resnet.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])
        assert torch.equal(resnet.stem[1].running_var, state["bn1.running_var"])


# --- pinned parameter counts (21 classes; built on the meta device, no memory) ------------------

PINNED = [
    # The released graph (DrSleep/refinenet-pytorch rf101): 42,500,160 ResNet-101 + 75,552,277 head.
    ({"preset": "released"}, 118_052_437),
    ({"preset": "released", "crp_order": "conv-pool"}, 118_052_437),
    # Paper preset: the RCU layouts hold the same convs (3 between blocks), so only 2 vs 4 CRP blocks
    # and the 1x1 vs 3x3 classifier differ from the released graph.
    ({"preset": "paper"}, 109_751_893),
    ({"preset": "paper", "crp_blocks": 4}, 118_009_429),
    ({"preset": "paper", "crp_blocks": 4, "classifier_kernel": 3}, 118_052_437),
    ({"preset": "released", "backbone": "resnet50"}, 99_060_309),
    ({"preset": "released", "backbone": "resnet152"}, 133_696_085),
    ({"preset": "paper", "backbone": "resnet50", "cascade": "single"}, 61_265_493),
    ({"preset": "paper", "backbone": "resnet50", "cascade": "2-cascaded"}, 66_574_677),
    ({"preset": "paper", "backbone": "resnet50"}, 90_759_765),
    ({"preset": "paper", "backbone": "resnet50", "cascade": "4-cascaded-2-scale"}, 150_839_445),
]


@pytest.mark.parametrize(("options", "expected"), PINNED, ids=[str(o) for o, _ in PINNED])
def test_pinned_parameter_counts(options, expected):
    assert meta_count(**options) == expected


def test_released_resnet101_count_by_hand():
    """The released graph's head, conv by conv (3x3 everywhere; paper.md §1.2 for the biases)."""

    def conv(c_in, c_out, bias=False):
        return 9 * c_in * c_out + (c_out if bias else 0)

    def rcu(c):
        return conv(c, c, bias=True) + conv(c, c)

    adapt = conv(2048, 512) + conv(1024, 256) + conv(512, 256) + conv(256, 256)
    refinenet4 = 2 * rcu(512) + 4 * conv(512, 512) + 3 * rcu(512)
    refinenet_m = 2 * rcu(256) + conv(256, 256) + 4 * conv(256, 256) + 3 * rcu(256)  # m = 3, 2, 1
    fusion_of_previous = conv(512, 256) + 2 * conv(256, 256)
    head = adapt + refinenet4 + 3 * refinenet_m + fusion_of_previous + conv(256, 21, bias=True)
    with torch.device("meta"):
        model = refinenet(21, preset="released")
    assert n_params(model.backbone) == 42_500_160
    assert n_params(model) - n_params(model.backbone) == head == 75_552_277


# --- options and errors -------------------------------------------------------------------------


def test_presets_resolve_their_defaults_and_overrides():
    paper = tiny().options
    assert (paper["crp_blocks"], paper["crp_order"], paper["output_rcus"], paper["final_rcus"]) == (
        2,
        "pool-conv",
        1,
        2,
    )
    assert (paper["dropout"], paper["classifier_kernel"]) == (0.0, 1)
    released = tiny(preset="released", crp_blocks=2).options
    assert (released["crp_blocks"], released["output_rcus"], released["dropout"]) == (2, 3, 0.5)
    assert released["classifier_kernel"] == 3 and released["cascade_path_rcus"] == 0
    model = tiny(preset="released")
    assert isinstance(model.head.classifier, nn.Conv2d) and model.head.classifier.kernel_size == (3, 3)
    assert isinstance(model.head.dropout, nn.Dropout) and len(model.head.rcus) == 0
    assert [type(a.dropout) for a in model.dimension_adaptation] == [nn.Identity] * 2 + [nn.Dropout] * 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"preset": "official"}, "'paper', 'released'"),
        ({"cascade": "3-cascaded"}, "'single', '2-cascaded', '4-cascaded', '4-cascaded-2-scale'"),
        ({"crp_order": "pool"}, "'pool-conv', 'conv-pool'"),
        ({"classifier_kernel": 5}, "1, 3"),
        ({"crp_blocks": -1}, "crp_blocks must be an integer >= 0"),
        ({"output_rcus": 1.5}, "output_rcus must be an integer >= 0"),
        ({"dropout": 1.0}, r"\[0, 1\)"),
        ({"feature_widths": (32, 16, 16)}, "4 positive integers"),
        ({"backbone": "resnet42"}, "resnet18, resnet34, resnet50, resnet101, resnet152"),
    ],
)
def test_invalid_options_raise_with_the_allowed_values(options, message):
    with pytest.raises(ValueError, match=message):
        refinenet(5, **(TINY | options))


def test_builder_is_registered_with_all_knobs():
    assert registry._REGISTRY["refinenet"] is refinenet
    assert set(inspect.signature(refinenet).parameters) - {"num_classes"} == {
        "backbone",
        "weights",
        "preset",
        "cascade",
        "crp_blocks",
        "crp_order",
        "output_rcus",
        "feature_widths",
        "dropout",
        "classifier_kernel",
    }
