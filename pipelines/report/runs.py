"""Load the trials of a suite from MLflow into one tidy DataFrame (docs/architecture.md, "MLflow record").

One row per trial run. Columns:

- identity: ``run_id``, ``experiment``, ``suite``, ``dataset``, ``status``, ``start_time``,
  ``artifact_uri``, ``model``, ``variant``, ``seed`` (Int64), ``error``, ``git_commit``;
- derived options the tables group by: ``backbone``, ``cascade`` (Table 9 label), ``crp_blocks``
  (float), ``preset``;
- ``params.<name>`` (strings, as MLflow stores them), ``metrics.<name>`` (floats: the last logged
  value), ``tags.<name>``;
- ``superseded``: True for a FINISHED trial of a (dataset, variant, seed) that a later FINISHED trial
  of the same cell replaces (a re-run sweep); tables use the latest one only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

FINISHED = "FINISHED"
# The four cascade variants of Table 9, in the paper's order.
CASCADE_LABELS = ("single", "2-cascaded", "4-cascaded", "4-cascaded 2-scale")
_CASCADE_ALIASES = {
    "1": "single",
    "single": "single",
    "1cascaded": "single",
    "2": "2-cascaded",
    "2cascaded": "2-cascaded",
    "two": "2-cascaded",
    "4": "4-cascaded",
    "4cascaded": "4-cascaded",
    "four": "4-cascaded",
    "42scale": "4-cascaded 2-scale",
    "4cascaded2scale": "4-cascaded 2-scale",
    "2scale": "4-cascaded 2-scale",
    "4x2scale": "4-cascaded 2-scale",
}


def cascade_label(value: Any) -> str:
    """Map a logged ``opt.cascade`` value to its Table 9 name (unknown values pass through as text)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    text = str(value).strip()
    if text in ("", "None", "nan"):
        return ""
    try:
        number = float(text)
        text = str(int(number)) if number.is_integer() else text
    except ValueError:
        pass
    key = "".join(ch for ch in text.lower() if ch.isalnum())
    return _CASCADE_ALIASES.get(key, text)


@dataclass
class SuiteRuns:
    """The trials of one suite, plus which requested datasets have no experiment."""

    suite: str
    tracking_uri: str
    trials: pd.DataFrame
    datasets: list[str]
    missing_datasets: list[str] = field(default_factory=list)

    def finished(self, dataset: str | None = None) -> pd.DataFrame:
        """FINISHED, non-superseded trials (of one dataset if given): the rows the tables use."""
        df = self.trials
        df = df[(df["status"] == FINISHED) & ~df["superseded"]]
        if dataset is not None:
            df = df[df["dataset"] == dataset]
        return df


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _check_uri(tracking_uri: str) -> None:
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri[len("sqlite:///") :])
        if not path.is_absolute():
            raise ValueError(
                f"Tracking URI {tracking_uri!r} is a relative SQLite path; pass an absolute one, "
                f"e.g. sqlite:///{Path.cwd() / path}"
            )
        if not path.exists():
            raise FileNotFoundError(
                f"No MLflow database at {path}. Run the sweep first (dvc repro sweep) or pass "
                f"--tracking-uri pointing at the store the sweep wrote."
            )


def load_suite(tracking_uri: str, suite: str, datasets: list[str] | None = None) -> SuiteRuns:
    """Read every trial run (tag ``kind=trial``) of the experiments ``<suite>/<dataset>``."""
    _check_uri(tracking_uri)
    client = _client(tracking_uri)
    experiments = {
        e.name.split("/", 1)[1]: e
        for e in client.search_experiments(filter_string=f"name LIKE '{suite}/%'")
        if e.name.startswith(f"{suite}/")
    }
    wanted = list(datasets) if datasets else sorted(experiments)
    missing = [d for d in wanted if d not in experiments]
    rows: list[dict[str, Any]] = []
    for ds in wanted:
        if ds not in experiments:
            continue
        exp = experiments[ds]
        token = None
        while True:
            page = client.search_runs(
                [exp.experiment_id], filter_string="tags.kind = 'trial'", max_results=1000, page_token=token
            )
            for run in page:
                rows.append(_run_row(run, suite, ds, exp.name))
            token = page.token
            if not token:
                break
    trials = _tidy(pd.DataFrame(rows))
    return SuiteRuns(
        suite=suite,
        tracking_uri=tracking_uri,
        trials=trials,
        datasets=[d for d in wanted if d in experiments],
        missing_datasets=missing,
    )


def _run_row(run, suite: str, dataset: str, experiment: str) -> dict[str, Any]:
    info, data = run.info, run.data
    row: dict[str, Any] = {
        "run_id": info.run_id,
        "experiment": experiment,
        "suite": suite,
        "dataset": dataset,
        "status": info.status,
        "start_time": info.start_time,
        "artifact_uri": info.artifact_uri,
    }
    row.update({f"params.{k}": v for k, v in data.params.items()})
    row.update({f"metrics.{k}": float(v) for k, v in data.metrics.items()})
    row.update({f"tags.{k}": v for k, v in data.tags.items()})
    return row


def _opt_text(df: pd.DataFrame, name: str) -> pd.Series:
    col = f"params.{name}"
    if col not in df:
        return pd.Series([""] * len(df), index=df.index, dtype=object)
    return df[col].astype(object).where(df[col].notna(), "").map(lambda v: "" if v == "None" else str(v))


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    base_cols = ["run_id", "experiment", "suite", "dataset", "status", "start_time", "artifact_uri"]
    if df.empty:
        df = pd.DataFrame(columns=base_cols)
    for name in ("model", "variant"):
        param = _opt_text(df, name)
        tag = df.get(f"tags.{name}", pd.Series([""] * len(df), index=df.index)).fillna("").astype(object)
        df[name] = param.where(param != "", tag)
    seed = _opt_text(df, "seed")
    seed_tag = df.get("tags.seed", pd.Series([""] * len(df), index=df.index)).fillna("").astype(object)
    df["seed"] = pd.to_numeric(seed.where(seed != "", seed_tag), errors="coerce").astype("Int64")
    for name in ("error", "git_commit"):
        df[name] = df.get(f"tags.{name}", pd.Series([""] * len(df), index=df.index)).fillna("").astype(object)
    df["backbone"] = _opt_text(df, "opt.backbone")
    df["cascade"] = _opt_text(df, "opt.cascade").map(cascade_label)
    df["crp_blocks"] = pd.to_numeric(_opt_text(df, "opt.crp_blocks"), errors="coerce")
    df["preset"] = _opt_text(df, "opt.preset")
    for col in [c for c in df.columns if c.startswith("metrics.")]:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["start_time"] = pd.to_numeric(df["start_time"], errors="coerce")
    df["superseded"] = False
    done = df[df["status"] == FINISHED].sort_values("start_time", ascending=False)
    dup = done.duplicated(subset=["dataset", "variant", "seed"], keep="first")
    df.loc[dup[dup].index, "superseded"] = True
    return df.sort_values(["dataset", "variant", "seed"], na_position="last").reset_index(drop=True)


def metric_history(tracking_uri: str, run_ids: list[str], key: str = "val/mIoU") -> pd.DataFrame:
    """Curves of ``key`` for the given runs: columns ``run_id``, ``step``, ``value``."""
    client = _client(tracking_uri)
    rows = [
        {"run_id": rid, "step": m.step, "value": m.value}
        for rid in run_ids
        for m in client.get_metric_history(rid, key)
    ]
    return pd.DataFrame(rows, columns=["run_id", "step", "value"])


class ArtifactCache:
    """Downloads trial artifacts once into ``root/<run_id>/`` (missing artifacts give None)."""

    def __init__(self, tracking_uri: str, root: Path) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.tracking_uri = tracking_uri
        self.root = Path(root)
        self.missing: list[tuple[str, str]] = []  # (run_id, artifact path)

    def path(self, run_id: str, artifact: str) -> Path | None:
        local = self.root / run_id / artifact
        if local.exists():
            return local
        try:
            got = _client(self.tracking_uri).download_artifacts(run_id, artifact, str(self.root / run_id))
        except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            log.info("artifact %s of run %s not available: %s", artifact, run_id, exc)
            self.missing.append((run_id, artifact))
            return None
        got_path = Path(got)
        return got_path if got_path.exists() else None

    def per_class_iou(self, run_id: str) -> tuple[list[str], np.ndarray] | None:
        p = self.path(run_id, "per_class_iou.json")
        if p is None:
            return None
        data = json.loads(p.read_text())
        iou = np.array([np.nan if v is None else float(v) for v in data["iou"]], dtype=float)
        return list(data["classes"]), iou

    def per_image_stats(self, run_id: str) -> dict[str, np.ndarray] | None:
        p = self.path(run_id, "per_image_stats.npz")
        if p is None:
            return None
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in ("image_ids", "intersection", "union")}

    def predictions(self, run_id: str) -> Path | None:
        return self.path(run_id, "predictions")

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
