"""RefineNet (Lin et al., CVPR 2017, https://arxiv.org/abs/1611.06612): the model, its cascade
variants (Table 9) and two presets.

- ``preset="paper"``: what the paper describes (§3.2): 2 CRP blocks (pool -> conv), one output RCU
  per block plus "two additional RCUs before the final softmax", a 1x1 "dense soft-max" classifier,
  no dropout.
- ``preset="released"``: the released ResNet-101 graph (guosheng/refinenet, ported as
  DrSleep/refinenet-pytorch ``rf101``): 4 CRP blocks (pool -> conv), 3 output RCUs per block and
  no RCU on the path from the previous block, dropout 0.5 on ResNet block-3/-4 and before a 3x3
  classifier. With ResNet-101 and 21 classes it has exactly 118,052,437 parameters.

Any option left at ``None`` takes the preset's value. docs/models.md lists the differences.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from torchvision.models.resnet import BasicBlock, Bottleneck

from refinenet.backbones import ResNetBackbone, parse_resnet_name
from refinenet.blocks import CRP_ORDERS, RefineNetBlock
from refinenet.blocks.chained_residual_pooling import MAX_POOL_MODES, ChainedResidualPooling
from refinenet.blocks.refinenet_block import rcu_chain
from refinenet.blocks.residual_conv_unit import conv3x3
from refinenet.registry import register_model


@dataclass(frozen=True)
class RefineNetPreset:
    """Defaults of one preset (see the module docstring and docs/models.md)."""

    crp_blocks: int
    crp_order: str
    output_rcus: int  # RCUs after the CRP in every RefineNet block ("output conv")
    final_rcus: int  # extra RCUs on the last block's output, before the classifier
    cascade_path_rcus: int  # adaptive RCUs on the input path coming from the previous RefineNet block
    dropout: float  # on ResNet block-3/-4 outputs and before the classifier
    classifier_kernel: int
    feature_widths: tuple[int, int, int, int] = (512, 256, 256, 256)  # blocks 4, 3, 2, 1


PRESETS: dict[str, RefineNetPreset] = {
    "paper": RefineNetPreset(
        crp_blocks=2,
        crp_order="pool-conv",
        output_rcus=1,
        final_rcus=2,
        cascade_path_rcus=2,
        dropout=0.0,
        classifier_kernel=1,
    ),
    "released": RefineNetPreset(
        crp_blocks=4,
        crp_order="pool-conv",
        output_rcus=3,
        final_rcus=0,
        cascade_path_rcus=0,
        dropout=0.5,
        classifier_kernel=3,
    ),
}

# Table 9 variants: the ResNet blocks (by level m = 1..4) fused by each RefineNet block, in cascade
# order. Every block after the first also takes the previous block's output.
CASCADES: dict[str, tuple[tuple[int, ...], ...]] = {
    "single": ((4, 3, 2, 1),),
    "2-cascaded": ((4, 3), (2, 1)),
    "4-cascaded": ((4,), (3,), (2,), (1,)),
    "4-cascaded-2-scale": ((4,), (3,), (2,), (1,)),
}
TWO_SCALE_FACTORS = (1.2, 0.6)  # §4.3: "the input image is scaled to a factor of 1.2 and 0.6"
CLASSIFIER_KERNELS = (1, 3)
DROPOUT_LEVELS = (3, 4)  # released code: dropout on the ResNet outputs wider than 512 (block-3, -4)


class MultiScaleBackbone(nn.Module):
    """Independent ResNets on rescaled copies of the input (§4.3, "4-cascaded 2-scale").

    ``forward`` returns the four block outputs of every scale, scale by scale, so output ``i`` comes
    from ResNet block ``path_group_ids[i]`` (the released code's ``path_group_ids=[1 2 3 4 1 2 3 4]``).
    """

    def __init__(
        self,
        backbone: str = "resnet101",
        *,
        weights: str | os.PathLike | None = None,
        scales: Sequence[float] = TWO_SCALE_FACTORS,
    ) -> None:
        super().__init__()
        self.scales = tuple(scales)
        self.resnets = nn.ModuleList(ResNetBackbone(backbone, weights=weights) for _ in self.scales)
        self.out_channels = tuple(c for resnet in self.resnets for c in resnet.out_channels)
        self.path_group_ids = tuple(m for _ in self.scales for m in (1, 2, 3, 4))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        features: list[torch.Tensor] = []
        for scale, resnet in zip(self.scales, self.resnets, strict=True):
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            features.extend(resnet(F.interpolate(x, size=size, mode="bilinear", align_corners=False)))
        return features


# --- Speed: frozen-BatchNorm folding (same parameters, same function) -------------------------------


def _versions(*tensors: torch.Tensor | None) -> tuple:
    return tuple((t.data_ptr(), t._version, t.dtype) for t in tensors if t is not None)


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, t)`` with ``bn(z) = z * s + t`` in eval mode. Cached while nothing in them needs a gradient
    (frozen BatchNorm or no-grad inference), keyed on the tensors' versions so updates are seen."""
    needs_grad = torch.is_grad_enabled() and bn.affine and (bn.weight.requires_grad or bn.bias.requires_grad)
    key = _versions(bn.running_mean, bn.running_var, bn.weight, bn.bias)
    cached = bn.__dict__.get("_folding_cache")
    if not needs_grad and cached is not None and cached[0] == key:
        return cached[1]
    scale = torch.rsqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.affine:
        scale = scale * bn.weight
        shift = shift * bn.weight + bn.bias
    if not needs_grad:
        scale, shift = scale.detach(), shift.detach()
        bn.__dict__["_folding_cache"] = (key, (scale, shift))
    return scale, shift


def conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn(conv(x))``; with ``bn`` in eval mode (frozen, or inference) as one conv with folded weights.

    An eval-mode BatchNorm is an affine map, so ``bn(conv(x, W)) = conv(x, W * s) + t`` with
    ``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s``. The folded weight is computed from the
    live parameters at every training step, so autograd still reaches ``W`` (and gamma, beta when they
    train) with the same gradients; the parameters and the state dict do not change. It saves the
    BatchNorm kernels and the BatchNorm input that autograd would keep (one activation per conv of
    the backbone). Without grad (inference) the folded weights are cached until a parameter changes.
    """
    if bn.training or conv.padding_mode != "zeros" or bn.running_var is None:
        return bn(conv(x))
    if not torch.is_grad_enabled():
        key = _versions(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias)
        cached = conv.__dict__.get("_folding_cache")
        if cached is None or cached[0] != key:
            scale, shift = _bn_affine(bn)
            bias = shift if conv.bias is None else shift + conv.bias * scale
            cached = (key, (conv.weight * scale.reshape(-1, 1, 1, 1), bias))
            conv.__dict__["_folding_cache"] = cached
        weight, bias = cached[1]
    else:
        scale, shift = _bn_affine(bn)
        bias = shift if conv.bias is None else shift + conv.bias * scale
        weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class _FoldingBottleneck(Bottleneck):
    """torchvision's Bottleneck whose conv -> BN pairs fold the BN when it is in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(conv_bn(self.conv1, self.bn1, x), inplace=True)
        out = F.relu(conv_bn(self.conv2, self.bn2, out), inplace=True)
        out = conv_bn(self.conv3, self.bn3, out)
        identity = x if self.downsample is None else conv_bn(self.downsample[0], self.downsample[1], x)
        return F.relu(out.add_(identity), inplace=True)


class _FoldingBasicBlock(BasicBlock):
    """torchvision's BasicBlock whose conv -> BN pairs fold the BN when it is in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(conv_bn(self.conv1, self.bn1, x), inplace=True)
        out = conv_bn(self.conv2, self.bn2, out)
        identity = x if self.downsample is None else conv_bn(self.downsample[0], self.downsample[1], x)
        return F.relu(out.add_(identity), inplace=True)


class _FoldingStem(nn.Sequential):
    """The ResNet stem ``(conv1, bn1, relu, maxpool)`` with the BN folded when it is in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn, relu, pool = self
        return pool(relu(conv_bn(conv, bn, x)))


def _is_conv_bn(modules: nn.Module | None) -> bool:
    return (
        isinstance(modules, nn.Sequential)
        and len(modules) == 2
        and isinstance(modules[0], nn.Conv2d)
        and isinstance(modules[1], nn.BatchNorm2d)
    )


def enable_batchnorm_folding(backbone: nn.Module) -> None:
    """Let every ResNet block and stem under ``backbone`` fold its eval-mode BatchNorm into the conv.

    Only the modules' classes change (to subclasses with a folding ``forward``): parameters,
    buffers, state-dict keys and the function computed stay the same; train-mode BatchNorm runs
    as before. It pays when the recipe freezes the backbone's BatchNorm (released code) and at inference.
    """
    for module in backbone.modules():
        plain_shortcut = module.__dict__.get("_modules", {}).get("downsample") is None or _is_conv_bn(
            getattr(module, "downsample", None)
        )
        if type(module) is Bottleneck and plain_shortcut:
            module.__class__ = _FoldingBottleneck
        elif type(module) is BasicBlock and plain_shortcut:
            module.__class__ = _FoldingBasicBlock
        elif (
            type(module) is nn.Sequential
            and len(module) == 4
            and isinstance(module[0], nn.Conv2d)
            and isinstance(module[1], nn.BatchNorm2d)
            and isinstance(module[2], nn.ReLU)
        ):
            module.__class__ = _FoldingStem


def _run_checkpointed(module: nn.Module, *args):
    return checkpoint(module, *args, use_reentrant=False)


def _check_choice(name: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        raise ValueError(f"Unknown {name} {value!r}. Valid values: {', '.join(map(repr, allowed))}.")


def _check_count(name: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{name} must be an integer >= 0 (or None for the preset's value), got {value!r}.")


class RefineNet(nn.Module):
    """Multi-path refinement network (§3, Fig. 2(c)) with the cascade variants of Table 9.

    ``forward(x)`` maps ``(N, 3, H, W)`` to logits ``(N, num_classes, H, W)`` for any H, W (bilinear
    upsampling, §3.1); ``forward_low_res(x)`` returns the logits of the last RefineNet block at
    stride 4 (stride 4 of the x1.2 input for the 2-scale variant), where the released code computes
    the loss.

    Args:
        num_classes: number of output classes.
        backbone: ``resnet18`` .. ``resnet152``.
        weights: None, ``"imagenet"`` or a state-dict path, passed to `ResNetBackbone`.
        preset: ``"paper"`` or ``"released"``: the defaults of the options below.
        cascade: ``"single"``, ``"2-cascaded"``, ``"4-cascaded"`` or ``"4-cascaded-2-scale"`` (Table 9).
        crp_blocks: pooling blocks per chained residual pooling (0 = no chained pooling, Table 2).
        crp_order: ``"pool-conv"`` (paper, released original graph) or ``"conv-pool"`` (released
            "improved residual pooling").
        output_rcus: RCUs after the CRP in every block.
        feature_widths: widths of the dimension-adaptation convs for ResNet blocks 4, 3, 2, 1.
        dropout: rate on ResNet block-3/-4 outputs and before the classifier (0 = none).
        classifier_kernel: 1 or 3.

    ``model.backbone`` holds all and only the ImageNet-initialisable parameters; every other conv
    is initialised with N(0, 0.01) weights and zero bias, as in the released code.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str = "resnet101",
        weights: str | os.PathLike | None = None,
        preset: str = "paper",
        cascade: str = "4-cascaded",
        crp_blocks: int | None = None,
        crp_order: str | None = None,
        output_rcus: int | None = None,
        feature_widths: Sequence[int] | None = None,
        dropout: float | None = None,
        classifier_kernel: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
        parse_resnet_name(backbone)
        _check_choice("preset", preset, tuple(PRESETS))
        _check_choice("cascade", cascade, tuple(CASCADES))
        _check_count("crp_blocks", crp_blocks)
        _check_count("output_rcus", output_rcus)
        if crp_order is not None:
            _check_choice("crp_order", crp_order, CRP_ORDERS)
        if classifier_kernel is not None:
            _check_choice("classifier_kernel", classifier_kernel, CLASSIFIER_KERNELS)
        if dropout is not None and not (isinstance(dropout, int | float) and 0.0 <= dropout < 1.0):
            raise ValueError(
                f"dropout must be a rate in [0, 1) (or None for the preset's value), got {dropout!r}."
            )
        if feature_widths is not None:
            feature_widths = tuple(feature_widths)
            if len(feature_widths) != 4 or not all(isinstance(c, int) and c > 0 for c in feature_widths):
                raise ValueError(
                    f"feature_widths must be 4 positive integers (for ResNet blocks 4, 3, 2, 1), "
                    f"got {feature_widths!r}."
                )

        defaults = PRESETS[preset]
        spec = RefineNetPreset(
            crp_blocks=defaults.crp_blocks if crp_blocks is None else crp_blocks,
            crp_order=crp_order or defaults.crp_order,
            output_rcus=defaults.output_rcus if output_rcus is None else output_rcus,
            final_rcus=defaults.final_rcus,
            cascade_path_rcus=defaults.cascade_path_rcus,
            dropout=defaults.dropout if dropout is None else float(dropout),
            classifier_kernel=classifier_kernel or defaults.classifier_kernel,
            feature_widths=feature_widths or defaults.feature_widths,
        )
        # The resolved options, for logging (every knob and the preset-fixed details).
        self.options = {"backbone": backbone, "preset": preset, "cascade": cascade, **asdict(spec)}

        if cascade == "4-cascaded-2-scale":
            self.backbone = MultiScaleBackbone(backbone, weights=weights)
            group_ids = self.backbone.path_group_ids
        else:
            self.backbone = ResNetBackbone(backbone, weights=weights)
            group_ids = (1, 2, 3, 4)
        enable_batchnorm_folding(self.backbone)
        self.activation_checkpointing = False
        level_width = dict(zip((4, 3, 2, 1), spec.feature_widths, strict=True))

        def maybe_dropout(active: bool) -> nn.Module:
            return nn.Dropout(spec.dropout) if active and spec.dropout > 0 else nn.Identity()

        # "Each ResNet output is passed through one convolutional layer to adapt the dimensionality"
        # (§3.2); released: 3x3, no bias, after dropout on block-3/-4.
        self.dimension_adaptation = nn.ModuleList(
            nn.Sequential(
                OrderedDict(
                    dropout=maybe_dropout(level in DROPOUT_LEVELS),
                    conv=conv3x3(channels, level_width[level]),
                )
            )
            for channels, level in zip(self.backbone.out_channels, group_ids, strict=True)
        )

        # Paths: the adapted ResNet outputs, then each RefineNet block's output as it is computed.
        path_widths = [level_width[level] for level in group_ids]
        self.block_inputs: list[list[int]] = []  # path indices fed to each block
        blocks = []
        for i, levels in enumerate(CASCADES[cascade]):
            inputs = [p for level in levels for p, g in enumerate(group_ids) if g == level]
            adaptive = [2] * len(inputs)
            if i > 0:
                inputs = [len(path_widths) - 1, *inputs]
                adaptive = [spec.cascade_path_rcus, *adaptive]
            block = RefineNetBlock(
                [path_widths[p] for p in inputs],
                adaptive_rcus=adaptive,
                crp_blocks=spec.crp_blocks,
                crp_order=spec.crp_order,
                output_rcus=spec.output_rcus,
            )
            blocks.append(block)
            self.block_inputs.append(inputs)
            path_widths.append(block.out_channels)
        self.refinenets = nn.ModuleList(blocks)

        width = path_widths[-1]
        self.head = nn.Sequential(
            OrderedDict(
                rcus=rcu_chain(width, spec.final_rcus),
                dropout=maybe_dropout(True),
                classifier=nn.Conv2d(
                    width, num_classes, spec.classifier_kernel, padding=spec.classifier_kernel // 2, bias=True
                ),
            )
        )
        self.num_classes = num_classes
        self._init_new_layers()

    def _init_new_layers(self) -> None:
        """N(0, 0.01) weights and zero biases for every conv outside the backbone (released code)."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Conv2d) and not name.startswith("backbone."):
                nn.init.normal_(module.weight, mean=0.0, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def set_activation_checkpointing(self, enabled: bool = True) -> RefineNet:
        """Memory knob: recompute each RefineNet block in the backward pass instead of keeping its
        activations (``torch.utils.checkpoint``). Same outputs and gradients; costs about one extra
        forward pass of the blocks per step (docs/performance.md). The backbone is not checkpointed:
        recomputing train-mode BatchNorm would update its running statistics twice."""
        self.activation_checkpointing = bool(enabled)
        return self

    def set_max_pool(self, mode: str = "separable") -> RefineNet:
        """Speed knob: how the CRP max-pools run, ``"separable"`` (default, faster) or ``"window"``
        (`refinenet.blocks.chained_residual_pooling.lean_max_pool`). Same outputs and gradient
        routing in both modes (docs/performance.md)."""
        if mode not in MAX_POOL_MODES:
            raise ValueError(f"Unknown max_pool mode {mode!r}. Valid modes: {', '.join(MAX_POOL_MODES)}.")
        for module in self.modules():
            if isinstance(module, ChainedResidualPooling):
                module.max_pool = mode
        return self

    def forward_low_res(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the last RefineNet block, ``(N, num_classes, ~H/4, ~W/4)``."""
        paths = [adapt(f) for adapt, f in zip(self.dimension_adaptation, self.backbone(x), strict=True)]
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block, inputs in zip(self.refinenets, self.block_inputs, strict=True):
            block_inputs = [paths[p] for p in inputs]
            paths.append(_run_checkpointed(block, block_inputs) if recompute else block(block_inputs))
        return self.head(paths[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes, H, W)``, bilinearly upsampled from `forward_low_res`."""
        logits = self.forward_low_res(x)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


# The registry builds RefineNet from its constructor: its keyword arguments are the options.
refinenet = register_model("refinenet")(RefineNet)
