"""Assemble the report: read the suite from MLflow, write tables/, figures/ and README.md under ``out``."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pipelines.report import figures, tables
from pipelines.report.render import write_index, write_table
from pipelines.report.runs import ArtifactCache, SuiteRuns, load_suite, metric_history

log = logging.getLogger(__name__)


def _git_commit(cwd: Path) -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def build_report(
    tracking_uri: str,
    suite: str,
    out: Path,
    datasets: Sequence[str] | None = None,
    profile: Path | None = None,
    prepared_root: Path = Path("data/prepared"),
    expected_variants: Sequence[str] = (),
    expected_seeds: Sequence[int] = (),
    reference: str = "refinenet",
    compare_paper: bool | None = None,
    n_boot: int = 2000,
    boot_seed: int = 0,
    n_qualitative: int = 4,
) -> Path:
    """Write the report of ``suite`` to ``out`` and return the path of its README.md."""
    out = Path(out)
    runs = load_suite(tracking_uri, suite, list(datasets) if datasets else None)
    if not runs.datasets and not runs.missing_datasets:
        raise ValueError(
            f"No MLflow experiment named '{suite}/<dataset>' in {tracking_uri}. Check --suite, "
            f"or run the sweep of that suite first."
        )
    for sub in ("tables", "figures"):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    compare_paper = suite == "paper" if compare_paper is None else compare_paper
    ref = tables.reference_variant(runs.trials, reference)
    paper = tables.load_paper_results()
    tdir, fdir = out / "tables", out / "figures"
    sections: list[tuple[str, list[object], str]] = []
    with tempfile.TemporaryDirectory(prefix="report-artifacts-") as tmp:
        cache = ArtifactCache(tracking_uri, Path(tmp))
        comp = [
            write_table(tables.comparison_table(runs, ds, ref, expected_variants, compare_paper, paper), tdir)
            # a dataset with no experiment still gets its table (all "no run") beside the paper's numbers
            for ds in runs.datasets + (runs.missing_datasets if compare_paper else [])
        ]
        sections.append(
            (
                "Comparison per dataset",
                comp,
                "The paper's per-dataset tables (Tables 1, 3-8): every variant of the suite, one row each."
                + (" Paper numbers stand beside ours." if compare_paper else ""),
            )
        )
        paper_tables = [
            t
            for t in (
                tables.cascade_table(runs, ref, paper),
                tables.ablation_table(runs, ref, paper),
                tables.preset_table(runs, ref),
            )
            if t is not None
        ]
        sections.append(
            (
                "Cascades, ablation and presets",
                [write_table(t, tdir) for t in paper_tables],
                ""
                if paper_tables
                else "The suite has no RefineNet trials that differ in cascade, "
                "backbone/chained pooling or preset.",
            )
        )
        boot = tables.bootstrap_table(runs, cache, ref, n_boot=n_boot, seed=boot_seed)
        items: list[object] = []
        if boot is not None:
            items = [
                write_table(boot, tdir),
                (
                    "mIoU differences with 95% CI",
                    figures.bootstrap_figure(boot.data, fdir / "bootstrap_miou_diff.png"),
                ),
            ]
        sections.append(
            (
                "Beyond the paper: are the gaps real?",
                items,
                "" if items else "No paired runs with per_image_stats.npz artifacts to bootstrap.",
            )
        )
        sections.append(_speed_section(profile, tdir, fdir))
        for ds in runs.datasets:
            sections.append(
                (
                    f"Figures: {ds}",
                    _dataset_figures(runs, ds, ref, cache, prepared_root, fdir, n_qualitative),
                    "",
                )
            )
        failed = write_table(tables.failed_runs_table(runs), tdir)
        missing = write_table(tables.missing_runs_table(runs, expected_variants, expected_seeds), tdir)
        intro = f"{len(failed.table.data)} unfinished run(s), {len(missing.table.data)} missing cell(s)."
        if cache.missing:
            intro += (
                " Artifacts not found: " + ", ".join(f"`{a}` of run {r[:8]}" for r, a in cache.missing) + "."
            )
        sections.append(("Failed and missing runs", [failed, missing], intro))
    commits = runs.trials["git_commit"].replace("", "unknown").value_counts()
    header = {
        "Suite": suite,
        "Datasets": ", ".join(runs.datasets) or "none",
        "Generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "Report code commit": _git_commit(Path.cwd()),
        "Trial commits (git_commit tag: runs)": ", ".join(f"{c[:12]}: {n}" for c, n in commits.items())
        or "none",
        "MLflow": tracking_uri,
        "Trials": f"{len(runs.trials)} ({int((runs.trials['status'] == 'FINISHED').sum())} finished)",
        "Reference RefineNet variant": ref or "none (no finished refinenet run)",
    }
    return write_index(out, header, sections)


def _speed_section(profile: Path | None, tdir: Path, fdir: Path) -> tuple[str, list[object], str]:
    title = "Speed and memory"
    if profile is None or not Path(profile).exists():
        return (
            title,
            [],
            f"No profile results ({profile}); run the profile stage (`python -m pipelines.profile`).",
        )
    prof = tables.load_profile(Path(profile))
    if prof.empty:
        return title, [], f"{profile} has no rows."
    fig = figures.profile_figure(prof, fdir / "speed_memory_vs_resolution.png")
    return (
        title,
        [
            write_table(tables.speed_table(prof), tdir),
            ("Peak training memory and throughput vs input resolution", fig),
        ],
        (
            "Dilated output-stride-8 heads (DeepLab, dashed) against RefineNet (solid), "
            "measured by the profile stage."
        ),
    )


def _dataset_figures(
    runs: SuiteRuns,
    ds: str,
    ref: str | None,
    cache: ArtifactCache,
    prepared_root: Path,
    fdir: Path,
    n_qualitative: int,
) -> list[object]:
    done = runs.finished(ds)
    models = dict(zip(done["variant"], done["model"], strict=True))
    order = tables.order_variants(done["variant"], models, ref)
    done = done.assign(_o=done["variant"].map(order.index)).sort_values(["_o", "seed"])
    items: list[object] = []
    hist = metric_history(runs.tracking_uri, list(done["run_id"]), "val/mIoU")
    if not hist.empty:
        hist = hist.merge(done[["run_id", "variant", "seed"]], on="run_id")
        items.append(
            (
                "Validation mIoU vs training iterations",
                figures.curves_figure(hist, fdir / f"{ds}_val_miou_curves.png", ds),
            )
        )
    rows = []
    for _, r in done.iterrows():
        got = cache.per_class_iou(r["run_id"])
        if got is not None:
            rows += [
                {"variant": r["variant"], "seed": r["seed"], "class": c, "iou": v}
                for c, v in zip(*got, strict=True)
            ]
    if rows:
        items.append(
            (
                "Per-class IoU",
                figures.per_class_figure(pd.DataFrame(rows), fdir / f"{ds}_per_class_iou.png", ds),
            )
        )
    preds: dict[str, Path] = {}
    for _, g in done.groupby("_o", sort=True):
        for run_id in g["run_id"]:  # lowest seed with predictions
            folder = cache.predictions(run_id)
            if folder is not None and any(folder.glob("*.png")):
                preds[str(g["variant"].iloc[0])] = folder
                break
    if preds:
        ids = sorted(p.stem for p in next(iter(preds.values())).glob("*.png"))[:n_qualitative]
        items.append(
            (
                "Qualitative results (lowest seed of each variant)",
                figures.qualitative_figure(
                    prepared_root / ds, preds, ids, fdir / f"{ds}_qualitative.png", ds
                ),
            )
        )
    if "metrics.val/boundary_IoU" in done and done["metrics.val/boundary_IoU"].notna().any():
        b = done.dropna(subset=["metrics.val/boundary_IoU"]).rename(
            columns={"metrics.val/boundary_IoU": "value"}
        )
        items.append(
            (
                "Boundary quality per variant",
                figures.boundary_figure(b[["variant", "seed", "value"]], fdir / f"{ds}_boundary_iou.png", ds),
            )
        )
    return items
