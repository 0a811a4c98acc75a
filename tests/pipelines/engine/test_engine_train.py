"""train(): short training learns, resume is exact, bad input and non-finite losses end clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.engine.checkpoint import CheckpointMismatchError, load_checkpoint
from pipelines.engine.config import TrainConfig
from pipelines.engine.data import DatasetNotPreparedError, SegmentationDataset
from pipelines.engine.train import NonFiniteLossError, lr_factor, make_optimizer, train
from refinenet import registry

METRIC_NAMES = {"val/mIoU", "val/pixel_acc", "val/mean_acc", "val/fwIoU", "val/boundary_IoU", "train/loss"}


def tiny_config(prepared: Path, run_dir: Path, **changes) -> TrainConfig:
    values = dict(
        model="tiny_test_net",
        dataset_root=str(prepared),
        run_dir=str(run_dir),
        iterations=8,
        batch_size=2,
        crop_size=24,
        optimizer="sgd",
        lr=0.05,
        backbone_lr_mult=1.0,
        num_workers=0,
        eval_interval=4,
        checkpoint_interval=3,
        log_interval=2,
        device="cpu",
    )
    values.update(changes)
    return TrainConfig(**values)


def majority_miou(prepared: Path) -> float:
    """mIoU of always predicting the most frequent class: the 'chance' level to beat."""
    ds = SegmentationDataset(prepared, "val")
    counts = np.zeros(3)
    for i in range(len(ds)):
        label = ds.load(i)[1]
        counts += np.bincount(label[label != 255], minlength=3)
    return counts.max() / counts.sum() / 3


# Recipes per model family (stack.md: from scratch, RefineNet needs AdamW at a small lr with clipping).
SHORT_RECIPES = {
    "tiny_test_net": dict(
        model_options={}, iterations=60, batch_size=4, crop_size=32, optimizer="sgd", lr=0.05
    ),
    "refinenet": dict(
        model_options={"backbone": "resnet18"},
        iterations=30,
        batch_size=4,
        crop_size=32,
        optimizer="adamw",
        lr=5e-4,
        weight_decay=1e-4,
        schedule="constant",
        grad_clip=1.0,
    ),
}


@pytest.mark.parametrize("model", ["tiny_test_net", pytest.param("refinenet", marks=pytest.mark.slow)])
def test_short_training_learns_and_writes_run_folder(prepared: Path, tmp_path: Path, model: str) -> None:
    if model not in registry.list_models():
        pytest.skip(f"model {model!r} is not registered yet")
    reports = []
    config = tiny_config(
        prepared,
        tmp_path / "run",
        model=model,
        backbone_lr_mult=1.0,
        eval_interval=20,
        checkpoint_interval=20,
        log_interval=10,
        **SHORT_RECIPES[model],
    )
    metrics = train(config, reporter=lambda m, step, ckpt: reports.append((dict(m), step, ckpt)))
    run = tmp_path / "run"
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    losses = [h["train/loss"] for h in history if "lr" in h]
    assert losses[-1] < 0.6 * losses[0], losses
    assert metrics["val/mIoU"] > majority_miou(prepared) + 0.15, metrics
    assert METRIC_NAMES <= set(metrics) and all(0 <= metrics[k] <= 1 for k in METRIC_NAMES - {"train/loss"})
    # reporter after every evaluation, with the checkpoint folder
    assert [step for _, step, _ in reports] == list(range(20, config.iterations + 1, 20)) + (
        [] if config.iterations % 20 == 0 else [config.iterations]
    )
    assert reports[-1][0] == metrics and Path(reports[-1][2], "last.pt").is_file()
    # run folder files of docs/architecture.md
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())) == config
    assert json.loads((run / "metrics.json").read_text()) == pytest.approx(metrics)
    cm = np.load(run / "confusion_matrix.npy")
    assert cm.shape == (3, 3) and cm.dtype == np.int64 and cm.sum() > 0
    per_class = json.loads((run / "per_class_iou.json").read_text())
    assert per_class["classes"] == ["background", "box", "disc"] and len(per_class["iou"]) == 3
    stats = np.load(run / "per_image_stats.npz")
    assert list(stats["image_ids"]) == ["val_000", "val_001", "val_002", "val_003"]
    assert stats["intersection"].shape == stats["union"].shape == (4, 3)
    np.testing.assert_array_equal(stats["intersection"].sum(0), np.diag(cm))
    predictions = sorted(p.name for p in (run / "predictions").iterdir())
    assert predictions == ["val_000.png", "val_001.png", "val_002.png", "val_003.png"]
    with Image.open(run / "predictions" / "val_000.png") as im:
        assert im.mode == "P" and im.size == (48, 40)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_after_stop_equals_uninterrupted_run(prepared: Path, tmp_path: Path) -> None:
    full = train(tiny_config(prepared, tmp_path / "full"))
    partial = train(tiny_config(prepared, tmp_path / "resumed", stop_after=5))
    assert partial["step"] == 5 and not (tmp_path / "resumed" / "metrics.json").exists()
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["step"] == 5
    resumed = train(tiny_config(prepared, tmp_path / "resumed"))
    _assert_same_weights(_weights(tmp_path / "full"), _weights(tmp_path / "resumed"))
    assert resumed == full
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "resumed" / "history.jsonl").read_text().splitlines()
    ]
    assert steps == [
        json.loads(line)["step"] for line in (tmp_path / "full" / "history.jsonl").read_text().splitlines()
    ]
    assert train(tiny_config(prepared, tmp_path / "full")) == full  # a finished run only re-evaluates


def test_resume_after_a_crash_with_workers(prepared: Path, tmp_path: Path) -> None:
    """A run killed right after its step-4 evaluation resumes from last.pt and ends identically."""

    def crash(metrics, step, checkpoint_dir):
        raise KeyboardInterrupt

    full = train(tiny_config(prepared, tmp_path / "full", num_workers=2))
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(prepared, tmp_path / "crashed", num_workers=2), reporter=crash)
    state = torch.load(tmp_path / "crashed" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 4 and state["data_position"] == {"samples": 8, "epoch": 0, "index": 8}
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "rng", "config", "model_name"}
    resumed = train(tiny_config(prepared, tmp_path / "crashed", num_workers=0))
    _assert_same_weights(_weights(tmp_path / "full"), _weights(tmp_path / "crashed"))
    assert resumed == full


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(prepared: Path, tmp_path: Path) -> None:
    config = tiny_config(
        prepared,
        tmp_path / "nan",
        model_options={"nan_after": 5},
        iterations=10,
        checkpoint_interval=2,
        eval_interval=100,
    )
    with pytest.raises(
        NonFiniteLossError, match=r"Loss is nan at step 6 \(lr backbone .*head .*\).*last\.pt"
    ):
        train(config)
    state = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_exploding_lr_never_checkpoints_a_bad_state(prepared: Path, tmp_path: Path) -> None:
    config = tiny_config(
        prepared, tmp_path / "boom", lr=1e30, iterations=6, checkpoint_interval=1, eval_interval=100
    )
    with pytest.raises(NonFiniteLossError, match="step"):
        train(config)
    ckpt = tmp_path / "boom" / "checkpoints" / "last.pt"
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_missing_dataset_names_path_and_command(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "prepared" / "cityscapes", tmp_path / "run")
    with pytest.raises(
        DatasetNotPreparedError,
        match=r"cityscapes does not exist.*python -m pipelines\.prepare "
        r"cityscapes",
    ):
        train(config)


def test_unknown_model_and_option(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="Unknown model 'nonet'. Valid models: .*tiny_test_net"):
        train(tiny_config(prepared, tmp_path / "a", model="nonet"))
    with pytest.raises(TypeError, match="Unknown option.*'depth'.*Valid options: nan_after, width"):
        train(tiny_config(prepared, tmp_path / "b", model_options={"depth": 3}))


def test_checkpoint_of_another_model_or_recipe_is_refused(prepared: Path, tmp_path: Path) -> None:
    train(tiny_config(prepared, tmp_path / "run", stop_after=3))
    with pytest.raises(CheckpointMismatchError, match="model 'tiny_test_net'.*trains 'tiny_test_net_b'"):
        train(tiny_config(prepared, tmp_path / "run", model="tiny_test_net_b"))
    with pytest.raises(CheckpointMismatchError, match="options"):
        train(tiny_config(prepared, tmp_path / "run", model_options={"width": 4}))
    with pytest.raises(CheckpointMismatchError, match=r"lr: checkpoint 0\.05 vs now 0\.1"):
        train(tiny_config(prepared, tmp_path / "run", lr=0.1))


def test_frozen_backbone_batchnorm_and_param_groups(prepared: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = tiny_config(
        prepared, tmp_path / "frozen", freeze_backbone_bn=True, iterations=4, backbone_lr_mult=0.1
    )
    before = registry.build_model("tiny_test_net", 3)
    train(config)
    after = _weights(tmp_path / "frozen")
    # seed 0 builds the same initial model as `before` did under manual_seed(0)
    for key in ("backbone.1.weight", "backbone.1.bias", "backbone.1.running_mean", "backbone.1.running_var"):
        assert torch.equal(after[key], before.state_dict()[key]), key
    assert not torch.equal(after["backbone.0.weight"], before.state_dict()["backbone.0.weight"])
    opt = make_optimizer(before, config)
    assert [g["name"] for g in opt.param_groups] == ["backbone", "head"]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.005, 0.05])


def test_learning_rate_schedules(prepared: Path, tmp_path: Path) -> None:
    poly = tiny_config(prepared, tmp_path, iterations=10, poly_power=1.0)
    assert [lr_factor(s, poly) for s in (0, 5, 9)] == pytest.approx([1.0, 0.5, 0.1])
    step = tiny_config(prepared, tmp_path, schedule="step", step_milestones=(3, 6), step_gamma=0.1)
    assert [lr_factor(s, step) for s in (2, 3, 6)] == pytest.approx([1.0, 0.1, 0.01])
    warm = tiny_config(prepared, tmp_path, schedule="constant", warmup_iters=4)
    assert [lr_factor(s, warm) for s in (0, 3, 7)] == pytest.approx([0.25, 1.0, 1.0])
