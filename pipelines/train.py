"""CLI: one standalone training run (no Ray, no DVC).

Example::

    python -m pipelines.train --dataset-root data/prepared/synthetic --model refinenet \
        --option backbone=resnet18 --iterations 200 --run-dir runs/x

Every `TrainConfig` field is a flag (``--batch-size 8``, ``--eval-scales 0.75 1.0 1.25``,
``--sliding-window 512 341``, ``--no-hflip``); ``--option KEY=VALUE`` sets a model option (values
are read as JSON where they parse, e.g. ``weights=null``, else as strings). Bad input ends with a
message naming the problem and exit status 2; a non-finite loss with status 1.

Data parallel on one machine (docs/multi_gpu.md): ``torchrun --nproc_per_node N -m pipelines.train
...`` runs N ranks (NCCL on GPUs, gloo on the CPU); ``--batch-size`` is then per rank.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from typing import Any

from pipelines.engine.config import TrainConfig


def _parse_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option {text!r}: expected KEY=VALUE, e.g. backbone=resnet18.")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.train", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--option",
        action="append",
        type=_parse_option,
        default=[],
        metavar="KEY=VALUE",
        help="model option (repeatable)",
    )
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "model_options":
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = hints[f.name]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else f.default
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        optional = origin in (typing.Union, types.UnionType) and type(None) in args
        if optional:
            tp = next(a for a in args if a is not type(None))
            origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif origin is tuple:
            item = int if args and args[0] is int else float
            parser.add_argument(
                flag, nargs="*", type=item, default=default, help="none" if optional else None
            )
        elif origin is typing.Literal:
            parser.add_argument(flag, choices=list(args), default=default)
        else:
            parser.add_argument(
                flag, type=tp if tp in (int, float, str) else str, default=default, required=required
            )
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "model_options"
    }
    if values.get("sliding_window") == []:
        values["sliding_window"] = None
    values["model_options"] = dict(args.option)
    return TrainConfig(**values)


def _init_distributed(config: TrainConfig) -> bool:
    """Join the process group of a ``torchrun`` launch (WORLD_SIZE > 1); False when single process."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    use_cuda = config.device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipelines.engine.checkpoint import CheckpointMismatchError
    from pipelines.engine.data import DatasetNotPreparedError
    from pipelines.engine.train import NonFiniteLossError, train
    from refinenet.registry import model_options

    try:
        config = config_from_args(args)
        valid = model_options(config.model)
        unknown = sorted(set(config.model_options) - set(valid))
        if unknown:
            raise TypeError(
                f"Unknown option(s) {', '.join(map(repr, unknown))} for model {config.model!r}. "
                f"Valid options: {', '.join(sorted(valid)) or '(none)'}."
            )
        joined = _init_distributed(config)
        try:
            metrics = train(config)
        finally:
            if joined:
                import torch.distributed as dist

                dist.destroy_process_group()
    except (ValueError, TypeError, KeyError, DatasetNotPreparedError, CheckpointMismatchError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(metrics, indent=2, sort_keys=True, default=str))
        print(f"run folder: {config.run_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
