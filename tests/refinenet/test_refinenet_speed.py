"""The speed and memory changes (docs/performance.md) keep RefineNet's function and parameters."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from refinenet.blocks.chained_residual_pooling import (
    ChainedResidualPooling,
    lean_max_pool,
    separable_max_pool,
)
from refinenet.model import RefineNet, _FoldingBasicBlock, _FoldingBottleneck, _FoldingStem


def _unfolded(model: nn.Module) -> nn.Module:
    """A copy whose ResNet modules run torchvision's own forward (no BatchNorm folding)."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, _FoldingBottleneck):
            m.__class__ = Bottleneck
        elif isinstance(m, _FoldingBasicBlock):
            m.__class__ = BasicBlock
        elif isinstance(m, _FoldingStem):
            m.__class__ = nn.Sequential
    return ref


def _randomise_batchnorm(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


@pytest.mark.parametrize("mode", ["separable", "window"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_lean_max_pool_routes_gradient_as_maxpool_with_ties(mode, channels_last):
    pool = nn.MaxPool2d(5, stride=1, padding=2)
    x = torch.relu(torch.randn(2, 3, 9, 11))  # relu: many tied zeros
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    # integer-valued upstream gradient: every sum is exact, so any routing difference would show
    g = torch.randint(-8, 9, (2, 3, 9, 11)).float()
    (ref,) = torch.autograd.grad(pool(x), x, g)
    out = lean_max_pool(pool, x, mode)
    (got,) = torch.autograd.grad(out, x, g)
    assert torch.equal(out, pool(x)) and torch.equal(got, ref)
    with torch.no_grad():
        assert torch.equal(lean_max_pool(pool, x, mode), pool(x))


def test_separable_max_pool_float64_continuous_input():
    """No ties: the gradient equals nn.MaxPool2d's and its total is the upstream total."""
    gen = torch.Generator().manual_seed(4)
    pool = nn.MaxPool2d((5, 3), stride=1, padding=(2, 1))
    x = torch.randn(2, 4, 13, 8, dtype=torch.float64, generator=gen).requires_grad_()
    g = torch.randn(2, 4, 13, 8, dtype=torch.float64, generator=gen)
    assert torch.equal(separable_max_pool(x.detach(), (5, 3), (2, 1)), pool(x).detach())
    (ref,) = torch.autograd.grad(pool(x), x, g)
    (got,) = torch.autograd.grad(lean_max_pool(pool, x), x, g)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.sum(), g.sum(), rtol=1e-12, atol=1e-12)


def test_max_pool_mode_knob_and_errors():
    model = RefineNet(3, backbone="resnet18", preset="released", feature_widths=(16, 8, 8, 8))
    crps = [m for m in model.modules() if isinstance(m, ChainedResidualPooling)]
    assert crps and all(m.max_pool == "separable" for m in crps)
    model.set_max_pool("window")
    assert all(m.max_pool == "window" for m in crps)
    with pytest.raises(ValueError, match="Valid modes"):
        model.set_max_pool("fast")
    with pytest.raises(ValueError, match="Valid modes"):
        lean_max_pool(nn.MaxPool2d(5, 1, 2), torch.zeros(1, 1, 4, 4), "fast")


def test_frozen_batchnorm_folding_keeps_outputs_gradients_and_state_dict():
    torch.manual_seed(0)
    model = RefineNet(3, backbone="resnet18", preset="released", dropout=0.0, feature_widths=(16, 8, 8, 8))
    assert any(isinstance(m, _FoldingBasicBlock) for m in model.modules())
    _randomise_batchnorm(model)
    ref = _unfolded(model)
    assert list(model.state_dict()) == list(ref.state_dict())
    for net in (model, ref):  # frozen backbone BatchNorm, as the released recipe trains
        net.train()
        for m in net.backbone.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    model.double(), ref.double()
    out, out_ref = model(x), ref(x)
    torch.testing.assert_close(out, out_ref, rtol=1e-9, atol=1e-9)
    out.square().mean().backward()
    out_ref.square().mean().backward()
    for (name, p), p_ref in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-7, atol=1e-12, msg=name)


def test_train_mode_batchnorm_is_not_folded_and_checkpointing_keeps_gradients():
    torch.manual_seed(0)
    model = RefineNet(3, backbone="resnet18", preset="released", dropout=0.0, feature_widths=(16, 8, 8, 8))
    model = model.double()
    ref = _unfolded(model)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    model.set_activation_checkpointing(True).train()
    ref.train()
    out, out_ref = model(x), ref(x)
    torch.testing.assert_close(out, out_ref, rtol=1e-9, atol=1e-9)
    out.sum().backward()
    out_ref.sum().backward()
    for p, p_ref in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-7, atol=1e-10)
