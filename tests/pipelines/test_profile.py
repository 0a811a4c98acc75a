"""The profile command (pipelines/profile.py) on the CPU with tiny settings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pipelines.profile import COLUMNS, main

CONTRACT = (  # docs/architecture.md, "Profile results"
    "variant", "model", "backbone", "precision", "batch", "height", "width", "n_params", "gflops",
    "train_img_per_s", "peak_mem_alloc_gb", "peak_mem_reserved_gb", "infer_latency_ms", "infer_img_per_s",
    "device_name", "torch_version", "cuda_version",
)  # fmt: skip


def test_standalone_profile_writes_csv_and_json_with_sane_values(tmp_path: Path, capsys) -> None:
    out = tmp_path / "h" / "profile.csv"
    argv = [
        "--params", str(tmp_path / "absent.yaml"), "--variants", "fcn32s", "--backbone", "resnet18",
        "--crop", "32", "--batch", "2", "--precisions", "fp32,bf16", "--resolutions", "48",
        "--warmup", "1", "--iterations", "1", "--latency-iterations", "1", "--infer-batch", "2",
        "--device", "cpu", "--no-mlflow", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    assert "MLflow logging skipped" in capsys.readouterr().err
    with out.open() as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames[: len(CONTRACT)]) == CONTRACT and tuple(reader.fieldnames) == COLUMNS
        rows = list(reader)
    assert [(r["row_kind"], r["precision"], r["height"]) for r in rows] == [
        ("main", "fp32", "32"), ("main", "bf16", "32"), ("sweep", "bf16", "48"),
    ]  # fmt: skip
    for row in rows:
        assert row["variant"] == "fcn32s" and row["backbone"] == "resnet18" and row["batch"] == "2"
        assert float(row["train_img_per_s"]) > 0
        assert row["peak_mem_alloc_gb"] == "" and row["device_name"].startswith("cpu")  # no memory on CPU
    main_row, sweep = rows[0], rows[2]
    assert int(float(main_row["n_params"])) > 11_000_000  # a ResNet-18 encoder
    assert float(main_row["gflops"]) > 0 and float(main_row["infer_latency_ms"]) > 0
    assert float(main_row["infer_img_per_s"]) > 0 and main_row["infer_batch"] == "2"
    assert sweep["infer_latency_ms"] == "" and sweep["gflops"] == ""
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["settings"]["crop"] == 32 and meta["settings"]["precisions"] == ["fp32", "bf16"]
    assert meta["settings"]["torch_version"] and len(meta["rows"]) == 3


def test_profile_rejects_unknown_variant_and_precision(tmp_path: Path, capsys) -> None:
    base = ["--params", str(tmp_path / "absent.yaml"), "--device", "cpu", "--no-mlflow"]
    assert main([*base, "--variants", "nonet"]) == 2
    assert "Unknown variant or model 'nonet'" in capsys.readouterr().err
    assert main([*base, "--variants", "fcn32s", "--precisions", "fp16"]) == 2
    assert "Unknown precision" in capsys.readouterr().err


def test_profile_without_params_or_variants_names_the_fix(tmp_path: Path, capsys) -> None:
    assert main(["--params", str(tmp_path / "absent.yaml")]) == 2
    assert "pass --params or --variants" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0"])
def test_profile_rejects_bad_batch(tmp_path: Path, capsys, bad: str) -> None:
    argv = ["--params", str(tmp_path / "a.yaml"), "--variants", "fcn32s", "--batch", bad, "--device", "cpu"]
    assert main(argv) == 2
    assert "batch must be an integer >= 1" in capsys.readouterr().err
