"""measure() fields on the CPU, TrainConfig validation, and the `python -m pipelines.train` CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from pipelines.engine.config import TrainConfig
from pipelines.engine.measure import MEASUREMENT_KEYS, measure
from pipelines.train import main


def test_measure_returns_every_field_on_cpu() -> None:
    model = nn.Conv2d(3, 5, 1, bias=False)
    before = model.weight.detach().clone()
    info = measure(model, 5, crop=16, batch=2, device="cpu", warmup=1, iterations=1, latency_iterations=2)
    assert set(MEASUREMENT_KEYS) <= set(info)
    assert info["n_params"] == 15
    assert info["gflops"] == pytest.approx(2 * 3 * 5 * 16 * 16 / 1e9)  # 2 FLOPs per multiply-accumulate
    assert info["train_img_per_s"] > 0 and info["infer_latency_ms"] > 0 and info["infer_img_per_s"] > 0
    assert math.isnan(info["peak_mem_alloc_gb"]) and math.isnan(info["peak_mem_reserved_gb"])
    assert info["precision"] == "fp32" and info["batch"] == 2 and info["crop"] == 16
    assert info["torch_version"] == torch.__version__ and info["device_name"].startswith("cpu")
    assert torch.equal(model.weight, before)  # a copy was trained, not the model


def test_config_validation_names_field_and_allowed_values(tmp_path: Path) -> None:
    base = dict(model="m", dataset_root=str(tmp_path), run_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"TrainConfig.optimizer='adam' is not allowed: one of sgd, adamw"):
        TrainConfig(**base, optimizer="adam")
    with pytest.raises(ValueError, match="step_milestones.*schedule='step'"):
        TrainConfig(**base, schedule="step")
    with pytest.raises(ValueError, match=r"crop_size=0 .*integer >= 1"):
        TrainConfig(**base, crop_size=0)
    with pytest.raises(ValueError, match=r"sliding_window.*\[crop, stride\]"):
        TrainConfig(**base, sliding_window=(100, 200))
    config = TrainConfig(**base, model_options={"b": 1, "a": None}, eval_scales=[0.5, 1.0])
    assert list(config.model_options) == ["a", "b"] and config.eval_scales == (0.5, 1.0)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert json.loads(json.dumps(config.to_dict()))["model_options"] == {"a": None, "b": 1}


def test_config_builds_from_params_mapping(tmp_path: Path) -> None:
    from_mapping = pytest.importorskip("pipelines.config").from_mapping
    values = dict(
        model="refinenet",
        model_options={"backbone": "resnet18"},
        dataset_root=str(tmp_path),
        run_dir=str(tmp_path),
        seed=1,
        scale_range=[0.7, 1.3],
        sliding_window=[512, 341],
        precision="bf16",
        grad_clip=1.0,
        eval_multiscale_scales=[0.6, 0.8, 1.0],
    )
    config = from_mapping(TrainConfig, values, "trial")
    assert config.sliding_window == (512, 341) and config.model_options == {"backbone": "resnet18"}


def test_cli_runs_and_writes_metrics(prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    code = main(
        [
            "--dataset-root",
            str(prepared),
            "--model",
            "tiny_test_net",
            "--option",
            "width=4",
            "--iterations",
            "4",
            "--batch-size",
            "2",
            "--crop-size",
            "24",
            "--run-dir",
            str(run),
            "--num-workers",
            "0",
            "--device",
            "cpu",
            "--eval-interval",
            "2",
            "--no-hflip",
            "--eval-scales",
            "0.5",
            "1.0",
            "--eval-multiscale-scales",
            "0.75",
            "1.0",
            "--measure",
        ]
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val/mIoU", "val/mIoU_ms", "gflops", "n_params", "infer_latency_ms"} <= set(metrics)
    config = json.loads((run / "config.json").read_text())
    assert (
        config["model_options"] == {"width": 4}
        and config["hflip"] is False
        and config["eval_scales"] == [0.5, 1.0]
    )
    assert json.loads((run / "measurements.json").read_text())["crop"] == 24


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nonet"], "Unknown model 'nonet'"),
        (["--model", "tiny_test_net", "--option", "depth=3"], "Unknown option(s) 'depth'"),
        (["--model", "tiny_test_net", "--crop-size", "0"], "crop_size=0"),
        (
            ["--model", "tiny_test_net", "--dataset-root", "/nonexistent/voc2012"],
            "python -m pipelines.prepare voc2012",
        ),
    ],
)
def test_cli_bad_input_exits_2(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args, message
) -> None:
    base = [
        "--dataset-root",
        str(prepared),
        "--run-dir",
        str(tmp_path / "r"),
        "--iterations",
        "1",
        "--num-workers",
        "0",
        "--device",
        "cpu",
    ]
    assert main(base + args) == 2
    assert message in capsys.readouterr().err
