"""The four RefineNet blocks (paper §3.2, Fig. 3) against hand-computed values on tiny tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from refinenet.blocks import ChainedResidualPooling, MultiResolutionFusion, RefineNetBlock, ResidualConvUnit


def set_center_tap(conv: nn.Conv2d, value: float) -> None:
    """Make a 3x3 conv a scaled channel-identity: out[c] = value * in[c] (c < min(in, out))."""
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(min(conv.in_channels, conv.out_channels)):
            conv.weight[c, c, 1, 1] = value
        if conv.bias is not None:
            conv.bias.zero_()


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- Residual conv unit -------------------------------------------------------------------------


def test_rcu_with_zeroed_convs_is_identity():
    rcu = ResidualConvUnit(3)
    for p in rcu.parameters():
        nn.init.zeros_(p)
    x = torch.randn(2, 3, 5, 7)
    assert torch.equal(rcu(x), x)


def test_rcu_hand_computed_and_bias_layout():
    rcu = ResidualConvUnit(1)
    set_center_tap(rcu.conv1, 1.0)
    set_center_tap(rcu.conv2, 2.0)
    with torch.no_grad():
        rcu.conv1.bias.fill_(-0.5)
    x = torch.tensor([[[[-1.0, 0.2, 0.4, 3.0]]]])
    expected = x + 2.0 * torch.clamp(torch.clamp(x, min=0) - 0.5, min=0)  # x + conv2(relu(conv1(relu x)))
    torch.testing.assert_close(rcu(x), expected)
    assert rcu.conv1.bias is not None and rcu.conv2.bias is None  # released: first conv has a bias
    assert n_params(ResidualConvUnit(256)) == 2 * 9 * 256 * 256 + 256


def test_rcu_does_not_modify_its_input():
    x = torch.randn(1, 4, 6, 6)
    x_copy = x.clone()
    ResidualConvUnit(4)(x)
    assert torch.equal(x, x_copy)


# --- Multi-resolution fusion --------------------------------------------------------------------


def test_mrf_single_input_passes_through_unchanged():
    mrf = MultiResolutionFusion([6])
    x = torch.randn(1, 6, 5, 3)
    assert torch.equal(mrf([x]), x)
    assert n_params(mrf) == 0 and mrf.out_channels == 6


def test_mrf_convs_to_smallest_width_and_upsamples_to_largest_input():
    mrf = MultiResolutionFusion([3, 2])
    assert mrf.out_channels == 2
    assert [c.bias for c in mrf.convs] == [None, None]  # released: fusion convs have no bias
    for conv in mrf.convs:
        set_center_tap(conv, 1.0)
    low = torch.randn(1, 3, 3, 2)  # 3 channels, lower resolution
    high = torch.randn(1, 2, 5, 3)
    out = mrf([low, high])
    expected = high + F.interpolate(low[:, :2], size=(5, 3), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_mrf_resize_target_comes_from_the_partner_tensor(order):
    mrf = MultiResolutionFusion([4, 4])
    tensors = [torch.randn(2, 4, 9, 7), torch.randn(2, 4, 3, 2)]
    inputs = [tensors[i] for i in order]
    assert mrf(inputs).shape == (2, 4, 9, 7)
    assert mrf([torch.randn(1, 4, 2, 2), torch.randn(1, 4, 33, 17)]).shape == (1, 4, 33, 17)


def test_mrf_rejects_wrong_number_of_inputs():
    with pytest.raises(ValueError, match="expects 2 inputs"):
        MultiResolutionFusion([4, 4])([torch.randn(1, 4, 2, 2)])


# --- Chained residual pooling -------------------------------------------------------------------

ROW = torch.tensor([[[[-1.0, 3.0, 0.0, -2.0, 5.0, 1.0, -4.0]]]])
RELU_ROW = [0.0, 3.0, 0.0, 0.0, 5.0, 1.0, 0.0]


def test_crp_without_blocks_is_relu():
    crp = ChainedResidualPooling(3, 0)
    x = torch.randn(2, 3, 4, 5)
    assert torch.equal(crp(x), F.relu(x))
    assert n_params(crp) == 0


def test_crp_blocks_are_chained_not_parallel():
    crp = ChainedResidualPooling(1, 2)
    for block in crp.blocks:
        set_center_tap(block.conv, 1.0)
    # b1 = maxpool5(relu x) = [3,3,5,5,5,5,5]; b2 = maxpool5(b1) = [5]*7 (a parallel CRP would give b1 again)
    expected = torch.tensor(RELU_ROW) + torch.tensor([3.0, 3, 5, 5, 5, 5, 5]) + 5.0
    torch.testing.assert_close(crp(ROW).flatten(), expected)


def test_crp_pool_conv_and_conv_pool_orders_differ_as_computed_by_hand():
    pool_conv = ChainedResidualPooling(1, 2, order="pool-conv")
    conv_pool = ChainedResidualPooling(1, 2, order="conv-pool")
    conv_pool.load_state_dict(pool_conv.state_dict())  # same keys in both orders
    for crp in (pool_conv, conv_pool):
        for block in crp.blocks:
            set_center_tap(block.conv, -1.0)
    # pool-conv: b1 = -pool(relu x) = -[3,3,5,5,5,5,5]; b2 = -pool(b1) = [3,3,3,3,5,5,5]
    expected_pool_conv = torch.tensor([0.0, 3, -2, -2, 5, 1, 0])
    # conv-pool: c1 = pool(-relu x) = 0 everywhere; c2 = pool(-c1) = 0: only relu(x) remains
    torch.testing.assert_close(pool_conv(ROW).flatten(), expected_pool_conv)
    torch.testing.assert_close(conv_pool(ROW).flatten(), torch.tensor(RELU_ROW))
    assert [type(m) for m in pool_conv.blocks[0]] == [nn.MaxPool2d, nn.Conv2d]
    assert [type(m) for m in conv_pool.blocks[0]] == [nn.Conv2d, nn.MaxPool2d]


def test_crp_layout_and_errors():
    crp = ChainedResidualPooling(8, 4)
    assert n_params(crp) == 4 * 9 * 8 * 8  # 3x3 convs without bias
    pool = crp.blocks[0].pool
    assert (pool.kernel_size, pool.stride, pool.padding) == (5, 1, 2)
    with pytest.raises(ValueError, match="pool-conv, conv-pool"):
        ChainedResidualPooling(8, 2, order="pool-pool")
    with pytest.raises(ValueError, match=">= 0"):
        ChainedResidualPooling(8, -1)


def test_crp_inplace_only_when_asked():
    x = torch.randn(1, 2, 4, 4)
    x_copy = x.clone()
    ChainedResidualPooling(2, 2)(x)
    assert torch.equal(x, x_copy)


# --- RefineNet block ----------------------------------------------------------------------------


def test_refinenet_block_structure():
    block = RefineNetBlock([8, 4], adaptive_rcus=[0, 2], crp_blocks=3, output_rcus=3)
    assert [len(chain) for chain in block.adaptive_convs] == [0, 2]
    assert len(block.fusion.convs) == 2 and len(block.chained_pooling.blocks) == 3
    assert len(block.output_convs) == 3 and block.out_channels == 4
    out = block([torch.randn(1, 8, 3, 2), torch.randn(1, 4, 6, 3)])
    assert out.shape == (1, 4, 6, 3)


def test_refinenet_block_equals_its_parts_in_sequence():
    torch.manual_seed(0)
    block = RefineNetBlock([6, 4], adaptive_rcus=2, crp_blocks=2, output_rcus=1)
    inputs = [torch.randn(2, 6, 3, 3), torch.randn(2, 4, 5, 6)]
    paths = [chain(x) for chain, x in zip(block.adaptive_convs, inputs, strict=True)]
    fused = block.fusion(paths)
    reference_crp = ChainedResidualPooling(4, 2)
    reference_crp.load_state_dict(block.chained_pooling.state_dict())
    expected = block.output_convs(reference_crp(fused.clone()))
    torch.testing.assert_close(block(inputs), expected)


def test_refinenet_block_single_input_without_rcus_leaves_input_intact():
    block = RefineNetBlock([4], adaptive_rcus=0, crp_blocks=1, output_rcus=0)
    x = torch.randn(1, 4, 3, 3)
    x_copy = x.clone()
    block([x])
    assert torch.equal(x, x_copy)


def test_refinenet_block_rejects_mismatched_rcu_counts():
    with pytest.raises(ValueError, match="2 input paths"):
        RefineNetBlock([4, 4], adaptive_rcus=[2])
