"""Data-parallel train(): two gloo ranks with batch B match one process with batch 2B."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipelines.engine.checkpoint import CheckpointMismatchError, load_checkpoint
from pipelines.engine.config import TrainConfig
from pipelines.engine.data import InfiniteBatchSampler
from pipelines.engine.train import train
from tests.pipelines.conftest import free_port
from tests.pipelines.engine.conftest import tiny_test_net

WORLD = 2
PER_WORKER_BATCH = 2


def ddp_config(prepared: Path, run_dir: Path, batch_size: int, **changes) -> TrainConfig:
    values = dict(
        model="tiny_test_net",
        dataset_root=str(prepared),
        run_dir=str(run_dir),
        iterations=6,
        batch_size=batch_size,
        crop_size=24,
        optimizer="sgd",
        lr=0.05,
        backbone_lr_mult=1.0,
        grad_clip=5.0,
        freeze_backbone_bn=True,  # BatchNorm in eval mode: per-rank statistics cannot differ
        num_workers=0,
        eval_interval=3,
        checkpoint_interval=2,
        log_interval=1,
        n_prediction_images=2,
        device="cpu",
    )
    values.update(changes)
    return TrainConfig(**values)


def _worker(rank: int, port: int, prepared: str, out: str) -> None:
    """One rank: a full run, a stopped-and-resumed run, and the sync_bn-on-CPU error."""
    from refinenet import registry

    registry._REGISTRY["tiny_test_net"] = tiny_test_net
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        out_dir = Path(out)
        calls = []

        def reporter(metrics, step, checkpoint_dir):
            calls.append({"step": step, "checkpoint_dir": checkpoint_dir, "mIoU": metrics["val/mIoU"]})

        full = train(ddp_config(Path(prepared), out_dir / "full", PER_WORKER_BATCH), reporter)
        partial = train(ddp_config(Path(prepared), out_dir / "resumed", PER_WORKER_BATCH, stop_after=3))
        resumed = train(ddp_config(Path(prepared), out_dir / "resumed", PER_WORKER_BATCH))
        try:
            train(ddp_config(Path(prepared), out_dir / "syncbn", PER_WORKER_BATCH, sync_bn=True))
            sync_bn_error = ""
        except ValueError as error:
            sync_bn_error = str(error)
        result = {
            "full": full,
            "partial_step": partial["step"],
            "resumed": resumed,
            "calls": calls,
            "sync_bn_error": sync_bn_error,
        }
        (out_dir / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_runs(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        mp.spawn(_worker, args=(free_port(), str(prepared), str(out)), nprocs=WORLD, join=True)
    finally:
        if env_threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_threads
    return out


def test_rank_slices_of_the_sampler_make_up_the_global_batch() -> None:
    single = iter(InfiniteBatchSampler(n=7, batch_size=6, seed=3, start=5))
    ranks = [iter(InfiniteBatchSampler(7, 2, 3, start=5, rank=r, world_size=3)) for r in range(3)]
    for _ in range(4):  # across epoch boundaries (7 samples per epoch)
        assert next(single) == [s for it in ranks for s in next(it)]
    with pytest.raises(ValueError, match="rank 2 is not in"):
        InfiniteBatchSampler(7, 2, 3, rank=2, world_size=2)


def test_two_ranks_match_one_process_with_the_effective_batch(ddp_runs: Path, prepared: Path) -> None:
    single_dir = ddp_runs / "single"
    single = train(ddp_config(prepared, single_dir, PER_WORKER_BATCH * WORLD))
    ranks = [json.loads((ddp_runs / f"rank{r}.json").read_text()) for r in range(WORLD)]
    ddp = ranks[0]["full"]
    assert ranks[1]["full"] == ddp  # every rank returns the same (all-reduced) metrics
    assert ddp["world_size"] == WORLD and ddp["effective_batch"] == PER_WORKER_BATCH * WORLD
    assert single["world_size"] == 1 and single["effective_batch"] == PER_WORKER_BATCH * WORLD
    for key in ("val/mIoU", "val/pixel_acc", "val/mean_acc", "val/fwIoU", "val/boundary_IoU", "train/loss"):
        assert ddp[key] == pytest.approx(single[key], rel=1e-4, abs=1e-5), key

    a = load_checkpoint(ddp_runs / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(single_dir / "checkpoints" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    assert a["data_position"] == b["data_position"] and a["step"] == b["step"] == 6
    assert (a["world_size"], a["effective_batch"]) == (2, 4)

    # The sharded evaluation gathers the whole split, in dataset order.
    np.testing.assert_array_equal(
        np.load(ddp_runs / "full" / "confusion_matrix.npy"), np.load(single_dir / "confusion_matrix.npy")
    )
    sa, sb = np.load(ddp_runs / "full" / "per_image_stats.npz"), np.load(single_dir / "per_image_stats.npz")
    assert list(sa["image_ids"]) == list(sb["image_ids"]) == ["val_000", "val_001", "val_002", "val_003"]
    np.testing.assert_array_equal(sa["intersection"], sb["intersection"])
    assert sorted(p.name for p in (ddp_runs / "full" / "predictions").iterdir()) == [
        "val_000.png",
        "val_001.png",  # val_001 was evaluated by rank 1 and written by rank 0
    ]
    history = [json.loads(line) for line in (ddp_runs / "full" / "history.jsonl").read_text().splitlines()]
    assert {h["step"] for h in history} == set(range(1, 7))


def test_every_rank_reports_and_only_rank_0_passes_the_checkpoint(ddp_runs: Path) -> None:
    calls = [json.loads((ddp_runs / f"rank{r}.json").read_text())["calls"] for r in range(WORLD)]
    assert [c["step"] for c in calls[0]] == [c["step"] for c in calls[1]] == [3, 6]
    assert all(c["checkpoint_dir"] == str(ddp_runs / "full" / "checkpoints") for c in calls[0])
    assert all(c["checkpoint_dir"] is None for c in calls[1])
    assert [c["mIoU"] for c in calls[0]] == [c["mIoU"] for c in calls[1]]


def test_data_parallel_resume_is_exact(ddp_runs: Path, prepared: Path) -> None:
    rank0 = json.loads((ddp_runs / "rank0.json").read_text())
    assert rank0["partial_step"] == 3
    assert rank0["resumed"] == rank0["full"]
    a = load_checkpoint(ddp_runs / "full" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(ddp_runs / "resumed" / "checkpoints" / "last.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # A single process cannot resume it with another effective batch.
    with pytest.raises(CheckpointMismatchError, match="effective batch of 4"):
        train(ddp_config(prepared, ddp_runs / "resumed", PER_WORKER_BATCH))


def test_sync_bn_on_the_cpu_fails_clearly_on_every_rank(ddp_runs: Path) -> None:
    for r in range(WORLD):
        error = json.loads((ddp_runs / f"rank{r}.json").read_text())["sync_bn_error"]
        assert "sync_bn=True needs GPUs" in error and "Fix:" in error
