"""The report's tables: each is tidy numeric data (CSV) plus a display frame (Markdown, LaTeX).

Tables derive their groups from trial params, never from variant names (docs/architecture.md):
Table 9 groups ``model=refinenet`` trials by ``opt.cascade``, Table 2 by ``opt.backbone`` x
(``opt.crp_blocks`` > 0) x (``val/mIoU`` or ``val/mIoU_ms``), the preset table by ``opt.preset``.
Accuracies and IoUs are shown and stored in percent (the paper's unit); MLflow holds them in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.report.bootstrap import paired_bootstrap
from pipelines.report.runs import CASCADE_LABELS, FINISHED, ArtifactCache, SuiteRuns

NO_RUN = "no run"
NOT_EVALUATED = "not evaluated"
NOT_MEASURED = "not measured"
PAPER_CSV = Path(__file__).with_name("paper_results.csv")
MAIN_TABLES = (1, 3, 4, 5, 6, 7, 8)  # the per-dataset comparison tables of the paper

# (MLflow metric, short key, column title)
ACCURACY_METRICS = (
    ("val/pixel_acc", "pixel_acc", "Pixel acc. (%)"),
    ("val/mean_acc", "mean_acc", "Mean acc. (%)"),
    ("val/mIoU", "mIoU", "IoU (%)"),
    ("val/mIoU_ms", "mIoU_ms", "IoU msc (%)"),
)
# (MLflow metric, column title, display scale, decimals)
MEASUREMENTS = (
    ("n_params", "Params (M)", 1e-6, 1),
    ("gflops", "GFLOPs", 1.0, 1),
    ("peak_mem_alloc_gb", "Peak train mem. (GB)", 1.0, 2),
    ("train_img_per_s", "Train img/s", 1.0, 1),
)
_DATASET_ALIASES = {
    "personpart": "person_part",
    "pascalpersonpart": "person_part",
    "personparts": "person_part",
    "nyudv2": "nyudv2",
    "nyuv2": "nyudv2",
    "nyu": "nyudv2",
    "nyud": "nyudv2",
    "nyudv240": "nyudv2",
    "voc": "voc2012",
    "voc2012": "voc2012",
    "pascalvoc": "voc2012",
    "pascalvoc2012": "voc2012",
    "cityscapes": "cityscapes",
    "pascalcontext": "pascal_context",
    "context": "pascal_context",
    "sunrgbd": "sunrgbd",
    "sun": "sunrgbd",
    "ade20k": "ade20k",
    "ade": "ade20k",
    "sceneparsing": "ade20k",
    "mitsceneparsing": "ade20k",
}
PAPER_DATASET_TITLES = {"nyudv2": "NYUDv2", "person_part": "Person-Parts"}


@dataclass
class Table:
    """One report table: ``data`` is tidy and numeric (CSV), ``display`` holds the formatted cells."""

    name: str
    title: str
    data: pd.DataFrame
    display: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def canonical_dataset(name: str) -> str:
    """The paper_results.csv key of a dataset name (``NYUv2`` -> ``nyudv2``); unknown names pass through."""
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    return _DATASET_ALIASES.get(key, name)


def load_paper_results(path: Path = PAPER_CSV) -> pd.DataFrame:
    """The paper's printed numbers (see paper_results.md for the citation and columns)."""
    df = pd.read_csv(
        path, dtype={"model": object, "backbone": object, "cascade": object}, keep_default_na=False
    )
    df["value"] = pd.to_numeric(df["value"])
    for col in ("chained_pooling", "msc_eval"):
        df[col] = pd.to_numeric(df[col].replace("", np.nan))
    return df


# ----------------------------------------------------------------------------- formatting helpers


def _finite(x: float | None) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x)) and not pd.isna(x)


def summarize(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample std (ddof=1; NaN for one value), n) of the non-NaN values."""
    v = np.array([x for x in values if _finite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size)


def fmt_mean_std(
    mean: float, std: float, n: int, decimals: int = 1, show_n: bool = False, empty: str = NO_RUN
) -> str:
    """``"72.3 ± 1.2"`` (``" (n=3)"`` appended if ``show_n``); ``empty`` when n == 0."""
    if n == 0 or not _finite(mean):
        return empty
    text = f"{mean:.{decimals}f}"
    if _finite(std):
        text += f" ± {std:.{decimals}f}"
    if show_n:
        text += f" (n={n})"
    return text


def fmt_num(x: float, decimals: int = 1, empty: str = "–", signed: bool = False) -> str:
    if not _finite(x):
        return empty
    return f"{x:+.{decimals}f}" if signed else f"{x:.{decimals}f}"


def _first_nonempty(values: Iterable) -> str:
    for v in values:
        if _finite(v) and str(v) != "":
            return str(v)
    return ""


# ----------------------------------------------------------------------------- variant ordering


def reference_variant(trials: pd.DataFrame, preferred: str = "refinenet") -> str | None:
    """The RefineNet variant the others are compared with: ``preferred`` if it ran, else the
    ``model=refinenet`` variant with the most FINISHED runs."""
    done = trials[trials["status"] == FINISHED]
    if preferred in set(done["variant"]):
        return preferred
    ref = done[done["model"] == "refinenet"]
    if ref.empty:
        return None
    return str(
        ref["variant"].value_counts().sort_index().sort_values(ascending=False, kind="stable").index[0]
    )


def order_variants(variants: Iterable[str], models: dict[str, str], reference: str | None) -> list[str]:
    """Reference first, then the other RefineNet variants, then baselines, each alphabetically."""
    vs = sorted(set(variants))
    return sorted(vs, key=lambda v: (v != reference, models.get(v) != "refinenet", v))


def _reference_config(runs: SuiteRuns, dataset: str, reference: str | None) -> dict[str, object] | None:
    done = runs.finished(dataset)
    rows = done[done["variant"] == reference] if reference else done.iloc[0:0]
    if rows.empty:
        return None
    r = rows.iloc[0]
    return {
        "backbone": r["backbone"],
        "cascade": r["cascade"],
        "preset": r["preset"],
        "crp": bool(r["crp_blocks"] > 0) if _finite(r["crp_blocks"]) else None,
    }


# ----------------------------------------------------------------------------- comparison table


def comparison_table(
    runs: SuiteRuns,
    dataset: str,
    reference: str | None,
    expected_variants: Sequence[str] = (),
    compare_paper: bool = False,
    paper: pd.DataFrame | None = None,
) -> Table:
    """The paper's per-dataset table (pixel acc., mean acc., IoU) for every variant, mean ± std over
    seeds, with params, GFLOPs, peak training memory and throughput of the same runs (§4, Tables 1-8)."""
    all_trials = runs.trials[runs.trials["dataset"] == dataset]
    done = runs.finished(dataset)
    models = {v: _first_nonempty(g["model"]) for v, g in all_trials.groupby("variant")}
    variants = order_variants(list(models) + list(expected_variants), models, reference)
    has_ms = "metrics.val/mIoU_ms" in done and done["metrics.val/mIoU_ms"].notna().any()
    metrics = [m for m in ACCURACY_METRICS if m[1] != "mIoU_ms" or has_ms]
    rows = []
    for variant in variants:
        g_all = all_trials[all_trials["variant"] == variant]
        g = done[done["variant"] == variant]
        row: dict[str, object] = {
            "dataset": dataset,
            "variant": variant,
            "model": models.get(variant, ""),
            "backbone": _first_nonempty(g_all["backbone"]),
            "cascade": _first_nonempty(g_all["cascade"]),
            "crp_blocks": pd.to_numeric(_first_nonempty(g_all["crp_blocks"]) or np.nan),
            "preset": _first_nonempty(g_all["preset"]),
            "n_runs": len(g),
        }
        for metric, key, _ in metrics:
            vals = g[f"metrics.{metric}"] * 100 if f"metrics.{metric}" in g else []
            mean, std, n = summarize(vals)
            row.update({f"{key}_pct_mean": mean, f"{key}_pct_std": std, f"{key}_n": n})
        for metric, *_ in MEASUREMENTS:
            mean, _, _ = summarize(g[f"metrics.{metric}"] if f"metrics.{metric}" in g else [])
            row[metric] = mean
        rows.append(row)
    columns = ["dataset", "variant", "model", "backbone", "cascade", "crp_blocks", "preset", "n_runs"]
    columns += [f"{key}_{x}" for _, key, _ in metrics for x in ("pct_mean", "pct_std", "n")]
    columns += [m[0] for m in MEASUREMENTS]
    data = pd.DataFrame(rows, columns=columns)
    notes = [
        "Mean ± sample standard deviation over seeds; n = finished runs (one per seed). "
        "Measurements (params ... img/s) are means over the same runs."
    ]
    if compare_paper:
        data, paper_notes = _attach_paper(data, dataset, paper if paper is not None else load_paper_results())
        notes += paper_notes
    display = _comparison_display(data, metrics, compare_paper)
    return Table(
        name=f"comparison_{dataset}",
        title=f"{dataset}: comparison of all variants",
        data=data,
        display=display,
        notes=notes,
    )


def _attach_paper(data: pd.DataFrame, dataset: str, paper: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    ds = canonical_dataset(dataset)
    p = paper[(paper["dataset"] == ds) & paper["table"].isin(MAIN_TABLES) & (paper["model"] != "")]
    data = data.copy()
    for key in ("pixel_acc", "mean_acc", "mIoU"):
        data[f"paper_{key}_pct"] = np.nan
        data[f"diff_{key}_pct"] = np.nan
    data["paper_method"] = ""
    data["paper_table"] = np.nan
    matched: set[str] = set()
    for i, row in data.iterrows():
        if row["model"] == "refinenet" and (
            row["cascade"] not in ("", "4-cascaded")
            or (_finite(row["crp_blocks"]) and row["crp_blocks"] <= 0)
        ):
            continue  # only the standard 4-cascaded model with chained pooling is in the main tables
        hit = p[(p["model"] == row["model"]) & (p["backbone"] == row["backbone"])]
        if hit.empty:
            continue
        matched.add(hit["method"].iloc[0])
        data.at[i, "paper_method"] = hit["method"].iloc[0]
        data.at[i, "paper_table"] = float(hit["table"].iloc[0])
        for key in ("pixel_acc", "mean_acc", "mIoU"):
            v = hit.loc[hit["metric"] == key, "value"]
            if v.empty:
                continue
            ours = row[f"{key}_pct_mean"]
            if key == "mIoU" and _finite(row.get("mIoU_ms_pct_mean", np.nan)):
                ours = row["mIoU_ms_pct_mean"]
            data.at[i, f"paper_{key}_pct"] = float(v.iloc[0])
            data.at[i, f"diff_{key}_pct"] = ours - float(v.iloc[0]) if _finite(ours) else np.nan
    extra = []
    for method, h in p.groupby("method", sort=False):
        if method in matched:
            continue
        row = {c: (0 if c.endswith("_n") else np.nan) for c in data.columns}
        row.update(
            {
                "dataset": dataset,
                "variant": "",
                "model": h["model"].iloc[0],
                "backbone": h["backbone"].iloc[0],
                "cascade": "",
                "preset": "",
                "n_runs": 0,
                "paper_method": method,
                "paper_table": float(h["table"].iloc[0]),
            }
        )
        for key in ("pixel_acc", "mean_acc", "mIoU"):
            v = h.loc[h["metric"] == key, "value"]
            row[f"paper_{key}_pct"] = float(v.iloc[0]) if not v.empty else np.nan
        extra.append(row)
    if extra:
        extra_df = pd.DataFrame(extra, columns=data.columns)
        data = extra_df if data.empty else pd.concat([data, extra_df], ignore_index=True)
    notes = [
        "Paper: Lin et al., CVPR 2017 (pipelines/report/paper_results.csv), evaluated on the paper's "
        "split (mostly test), ours on the prepared validation split. Δ = ours − paper. Paper IoU is "
        "compared with our multi-scale IoU where it was evaluated, else single-scale. Rows are matched "
        "by model family and backbone; a paper row with no variant of ours says 'no run'."
    ]
    return data, notes


def _comparison_display(data: pd.DataFrame, metrics, compare_paper: bool) -> pd.DataFrame:
    out = []
    paper_keys = [
        k for k in ("pixel_acc", "mean_acc", "mIoU") if compare_paper and data[f"paper_{k}_pct"].notna().any()
    ]
    for _, r in data.iterrows():
        d = {
            "Variant": r["variant"] or f"({r['paper_method']})",
            "Model": r["model"],
            "Backbone": r["backbone"] or "–",
            "Seeds": str(int(r["n_runs"])),
        }
        for _, key, title in metrics:
            d[title] = fmt_mean_std(
                r[f"{key}_pct_mean"],
                r[f"{key}_pct_std"],
                int(r[f"{key}_n"] or 0),
                empty=NO_RUN if r["n_runs"] == 0 else NOT_EVALUATED,
            )
            if r["n_runs"] and 0 < r[f"{key}_n"] < r["n_runs"]:
                d[title] += f" (n={int(r[f'{key}_n'])})"
        for metric, title, scale, dec in MEASUREMENTS:
            d[title] = fmt_num(r[metric] * scale, dec, empty=NO_RUN if r["n_runs"] == 0 else NOT_MEASURED)
        if compare_paper:
            d["Paper method"] = r["paper_method"] or "–"
            for key in paper_keys:
                name = {"pixel_acc": "pixel acc.", "mean_acc": "mean acc.", "mIoU": "IoU"}[key]
                d[f"Paper {name}"] = fmt_num(r[f"paper_{key}_pct"], 1)
                d[f"Δ {name}"] = fmt_num(r[f"diff_{key}_pct"], 1, signed=True)
        out.append(d)
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- Table 9: cascades


def cascade_table(runs: SuiteRuns, reference: str | None, paper: pd.DataFrame | None = None) -> Table | None:
    """Table 9: single, 2-cascaded, 4-cascaded, 4-cascaded 2-scale RefineNet, per dataset and backbone
    whose RefineNet trials (same preset and chained pooling as the reference) differ in opt.cascade."""
    paper = paper if paper is not None else load_paper_results()
    p9 = paper[paper["table"] == 9].set_index("cascade")["value"]
    rows = []
    for ds in runs.datasets:
        cfg = _reference_config(runs, ds, reference)
        t = runs.trials[(runs.trials["dataset"] == ds) & (runs.trials["model"] == "refinenet")]
        if cfg is not None:
            crp = t["crp_blocks"].fillna(1) > 0
            t = t[(t["preset"] == cfg["preset"]) & ((crp == cfg["crp"]) if cfg["crp"] is not None else True)]
        for backbone, tb in t.groupby("backbone", sort=False):
            labels = sorted(set(tb["cascade"]) - {""})
            if len(labels) < 2:
                continue
            done = tb[(tb["status"] == FINISHED) & ~tb["superseded"]]
            for label in list(CASCADE_LABELS) + [x for x in labels if x not in CASCADE_LABELS]:
                g = done[done["cascade"] == label]
                mean, std, n = summarize(g["metrics.val/mIoU"] * 100)
                paper_v = float(p9[label]) if label in p9 else np.nan
                comparable = canonical_dataset(ds) == "nyudv2" and backbone == "resnet50" and n
                rows.append(
                    {
                        "dataset": ds,
                        "backbone": backbone,
                        "cascade": label,
                        "variants": ",".join(sorted(set(tb.loc[tb["cascade"] == label, "variant"]))),
                        "n_runs": n,
                        "mIoU_pct_mean": mean,
                        "mIoU_pct_std": std,
                        "paper_nyudv2_res50_mIoU_pct": paper_v,
                        "diff_mIoU_pct": (mean - paper_v) if comparable else np.nan,
                    }
                )
    if not rows:
        return None
    data = pd.DataFrame(rows)
    disp = []
    for (backbone, label), g in data.groupby(["backbone", "cascade"], sort=False):
        d = {"Variant": label, "Initialization": backbone}
        for _, r in g.iterrows():
            d[f"{r['dataset']} IoU (%)"] = fmt_mean_std(
                r["mIoU_pct_mean"], r["mIoU_pct_std"], r["n_runs"], show_n=True
            )
            if canonical_dataset(r["dataset"]) == "nyudv2" and backbone == "resnet50":
                d[f"Δ {r['dataset']}"] = fmt_num(r["diff_mIoU_pct"], 1, signed=True)
        d["Paper (NYUDv2, Res50)"] = fmt_num(g["paper_nyudv2_res50_mIoU_pct"].iloc[0], 1)
        disp.append(d)
    notes = [
        "model=refinenet trials with the reference's preset and chained pooling, grouped by opt.backbone and "
        "opt.cascade; single-scale evaluation (val/mIoU). The paper's column is NYUDv2 with ResNet-50 "
        "(Table 9 exists for NYUDv2 only); Δ is shown for NYUDv2 ResNet-50 rows only."
    ]
    display = pd.DataFrame(disp)
    for col in display.columns:
        display[col] = display[col].fillna(NO_RUN if col.endswith("IoU (%)") else "–")
    return Table("table9_cascades", "Table 9: cascade variants (IoU)", data, display, notes)


# ----------------------------------------------------------------------------- Table 2: ablation


def ablation_table(runs: SuiteRuns, reference: str | None, paper: pd.DataFrame | None = None) -> Table | None:
    """Table 2: backbone x chained residual pooling (opt.crp_blocks > 0) x multi-scale evaluation."""
    paper = paper if paper is not None else load_paper_results()
    p2 = paper[paper["table"] == 2]
    groups: dict[tuple[str, float, int], dict[str, tuple[float, float, int]]] = {}
    used = []
    for ds in runs.datasets:
        cfg = _reference_config(runs, ds, reference)
        t = runs.finished(ds)
        t = t[t["model"] == "refinenet"]
        if cfg is not None:
            t = t[(t["cascade"] == cfg["cascade"]) & (t["preset"] == cfg["preset"])]
        if t.empty:
            continue
        used.append(ds)
        for (bb, crp), g in t.groupby(["backbone", t["crp_blocks"].fillna(-1)]):
            for msc, metric in ((0, "metrics.val/mIoU"), (1, "metrics.val/mIoU_ms")):
                vals = g[metric] * 100 if metric in g else pd.Series(dtype=float)
                groups.setdefault((bb, float(crp), msc), {})[ds] = summarize(vals) + (len(g),)
    if not used:
        return None
    keys = set(groups)
    for _, r in p2.iterrows():  # paper rows we did not run still get a row ("no run")
        if not any(
            k[0] == r["backbone"] and _chained(k[1]) == r["chained_pooling"] and k[2] == r["msc_eval"]
            for k in keys
        ):
            keys.add(
                (r["backbone"], np.nan, int(r["msc_eval"]))
                if r["chained_pooling"]
                else (r["backbone"], 0.0, int(r["msc_eval"]))
            )

    def depth(bb: str) -> int:
        digits = "".join(ch for ch in bb if ch.isdigit())
        return int(digits) if digits else 0

    rows = []
    for bb, crp, msc in sorted(keys, key=lambda k: (depth(k[0]), k[0], np.nan_to_num(k[1], nan=1e9), k[2])):
        chained = _chained(crp)
        row = {
            "backbone": bb,
            "crp_blocks": crp if _finite(crp) and crp >= 0 else np.nan,
            "chained_pooling": chained,
            "msc_eval": msc,
        }
        for ds in used:
            mean, std, n, n_runs = groups.get((bb, crp, msc), {}).get(ds, (np.nan, np.nan, 0, 0))
            row.update(
                {f"{ds}_mIoU_pct_mean": mean, f"{ds}_mIoU_pct_std": std, f"{ds}_n": n, f"{ds}_n_runs": n_runs}
            )
        for pds in ("nyudv2", "person_part"):
            hit = p2[
                (p2["dataset"] == pds)
                & (p2["backbone"] == bb)
                & (p2["chained_pooling"] == chained)
                & (p2["msc_eval"] == msc)
            ]
            row[f"paper_{pds}_mIoU_pct"] = float(hit["value"].iloc[0]) if not hit.empty else np.nan
        rows.append(row)
    data = pd.DataFrame(rows)
    disp = []
    for _, r in data.iterrows():
        crp_text = (
            "no"
            if r["chained_pooling"] == 0
            else (f"yes ({int(r['crp_blocks'])} blocks)" if _finite(r["crp_blocks"]) else "yes")
        )
        d = {
            "Initialization": r["backbone"],
            "Chained pool.": crp_text,
            "Msc Eva": "yes" if r["msc_eval"] else "no",
        }
        for ds in used:
            empty = NOT_EVALUATED if r[f"{ds}_n_runs"] else NO_RUN
            d[f"{ds} IoU (%)"] = fmt_mean_std(
                r[f"{ds}_mIoU_pct_mean"], r[f"{ds}_mIoU_pct_std"], int(r[f"{ds}_n"]), show_n=True, empty=empty
            )
        for pds, title in PAPER_DATASET_TITLES.items():
            d[f"Paper {title}"] = fmt_num(r[f"paper_{pds}_mIoU_pct"], 1)
        disp.append(d)
    notes = [
        "model=refinenet trials with the reference's cascade and preset, grouped by opt.backbone and "
        "opt.crp_blocks; 'Msc Eva' no = val/mIoU, yes = val/mIoU_ms. Paper columns: Table 2 (test splits)."
    ]
    return Table("table2_ablation", "Table 2: ablation (IoU)", data, pd.DataFrame(disp), notes)


def _chained(crp_blocks: float) -> int:
    """1 if chained residual pooling is on: crp_blocks > 0, or unknown (NaN / -1 = not logged)."""
    return int(not _finite(crp_blocks) or crp_blocks > 0 or crp_blocks == -1)


# ----------------------------------------------------------------------------- presets


def preset_table(runs: SuiteRuns, reference: str | None) -> Table | None:
    """The paper preset against the released-code preset (paper.md §6), per dataset."""
    rows = []
    for ds in runs.datasets:
        cfg = _reference_config(runs, ds, reference)
        t = runs.trials[(runs.trials["dataset"] == ds) & (runs.trials["model"] == "refinenet")]
        if cfg is not None:
            t = t[(t["cascade"] == cfg["cascade"]) & (t["crp_blocks"].fillna(1) > 0)]
        if not set(t["preset"]) - {""}:
            continue
        # backbones on which a non-paper preset ran; else the reference's (its 'released' row says no run)
        backbones = sorted(set(t.loc[~t["preset"].isin(["", "paper"]), "backbone"]))
        if not backbones:
            backbones = [cfg["backbone"]] if cfg is not None else sorted(set(t["backbone"]))
        for backbone in backbones:
            tb = t[t["backbone"] == backbone]
            done = tb[(tb["status"] == FINISHED) & ~tb["superseded"]]
            presets = set(tb["preset"]) - {""}
            for preset in sorted(
                presets | {"paper", "released"}, key=lambda p: (p != "paper", p != "released", p)
            ):
                g = done[done["preset"] == preset]
                row = {
                    "dataset": ds,
                    "preset": preset,
                    "backbone": backbone,
                    "variants": ",".join(sorted(set(tb.loc[tb["preset"] == preset, "variant"]))),
                    "n_runs": len(g),
                }
                for metric, key, _ in ACCURACY_METRICS:
                    mean, std, n = summarize(g[f"metrics.{metric}"] * 100 if f"metrics.{metric}" in g else [])
                    row.update({f"{key}_pct_mean": mean, f"{key}_pct_std": std, f"{key}_n": n})
                for metric, *_ in MEASUREMENTS:
                    row[metric] = summarize(g[f"metrics.{metric}"] if f"metrics.{metric}" in g else [])[0]
                rows.append(row)
    if not rows:
        return None
    data = pd.DataFrame(rows)
    disp = []
    for _, r in data.iterrows():
        d = {
            "Dataset": r["dataset"],
            "Preset": r["preset"],
            "Variants": r["variants"] or "–",
            "Backbone": r["backbone"],
            "Seeds": str(int(r["n_runs"])),
        }
        for _, key, title in ACCURACY_METRICS:
            d[title] = fmt_mean_std(
                r[f"{key}_pct_mean"],
                r[f"{key}_pct_std"],
                int(r[f"{key}_n"]),
                empty=NO_RUN if r["n_runs"] == 0 else NOT_EVALUATED,
            )
        for metric, title, scale, dec in MEASUREMENTS:
            d[title] = fmt_num(r[metric] * scale, dec, empty=NO_RUN if r["n_runs"] == 0 else NOT_MEASURED)
        disp.append(d)
    notes = [
        "model=refinenet trials with the reference's cascade and chained pooling on, per backbone, "
        "grouped by opt.preset: 'paper' follows the CVPR text, 'released' the released code "
        "(4 chained pooling blocks, 3 output RCUs, dropout, 3x3 classifier; paper.md §6, docs/models.md)."
    ]
    return Table("presets", "Paper preset vs released-code preset", data, pd.DataFrame(disp), notes)


# ----------------------------------------------------------------------------- speed and memory

PROFILE_COLUMNS = (
    "n_params",
    "gflops",
    "train_img_per_s",
    "peak_mem_alloc_gb",
    "peak_mem_reserved_gb",
    "infer_latency_ms",
    "infer_img_per_s",
)


def load_profile(path: Path) -> pd.DataFrame:
    """results/profile.csv (docs/architecture.md, "Profile results"), numeric columns as floats."""
    df = pd.read_csv(path)
    required = {"variant", "model", "precision", "batch", "height", "width"}
    if not required <= set(df.columns):
        raise ValueError(
            f"{path} lacks columns {sorted(required - set(df.columns))}; "
            f"regenerate it with `python -m pipelines.profile`."
        )
    for col in PROFILE_COLUMNS + ("batch", "height", "width"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ("backbone", "device_name", "precision"):
        if col in df:
            df[col] = df[col].fillna("").astype(str)
    return df.sort_values(["variant", "precision", "batch", "height", "width"]).reset_index(drop=True)


def speed_table(profile: pd.DataFrame) -> Table:
    """Speed and memory per model and input resolution, from the profile stage."""
    data = profile.copy()
    disp = []
    for _, r in data.iterrows():
        disp.append(
            {
                "Variant": r["variant"],
                "Model": r["model"],
                "Backbone": r.get("backbone", "") or "–",
                "Precision": r["precision"],
                "Batch": str(int(r["batch"])),
                "Input (H×W)": f"{int(r['height'])}×{int(r['width'])}",
                "Params (M)": fmt_num(r.get("n_params", np.nan) * 1e-6, 1, empty=NOT_MEASURED),
                "GFLOPs": fmt_num(r.get("gflops", np.nan), 1, empty=NOT_MEASURED),
                "Train img/s": fmt_num(r.get("train_img_per_s", np.nan), 1, empty=NOT_MEASURED),
                "Peak train mem. (GB)": fmt_num(r.get("peak_mem_alloc_gb", np.nan), 2, empty=NOT_MEASURED),
                "Infer latency (ms)": fmt_num(r.get("infer_latency_ms", np.nan), 1, empty=NOT_MEASURED),
                "Infer img/s": fmt_num(r.get("infer_img_per_s", np.nan), 1, empty=NOT_MEASURED),
            }
        )
    devices = sorted(set(data.get("device_name", pd.Series(dtype=str))) - {""})
    notes = [
        f"Measured by the profile stage on: {', '.join(devices) or 'unknown device'}. "
        "Memory is torch.cuda.max_memory_allocated over training steps; 'not measured' on the CPU."
    ]
    return Table("speed_memory", "Speed and memory per model and input size", data, pd.DataFrame(disp), notes)


# ----------------------------------------------------------------------------- bootstrap


def bootstrap_table(
    runs: SuiteRuns,
    cache: ArtifactCache,
    reference: str | None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Table | None:
    """RefineNet (the reference variant) minus each baseline in mIoU, with a paired bootstrap CI over
    validation images: one row per seed pair, and one pooled row (mean over seeds of the difference,
    the same resampled images for every seed)."""
    if reference is None:
        return None
    rows = []
    for ds in runs.datasets:
        done = runs.finished(ds)
        ref = done[done["variant"] == reference]
        if ref.empty:
            continue
        others = done[done["variant"] != reference]
        baselines = sorted(set(others.loc[others["model"] != "refinenet", "variant"]))
        presets = sorted(set(others.loc[(others["model"] == "refinenet"), "variant"]))
        for other in baselines + presets:
            pairs, seeds = [], []
            ob = others[others["variant"] == other]
            for s in sorted(set(ref["seed"].dropna()) & set(ob["seed"].dropna())):
                a = cache.per_image_stats(ref.loc[ref["seed"] == s, "run_id"].iloc[0])
                b = cache.per_image_stats(ob.loc[ob["seed"] == s, "run_id"].iloc[0])
                if a is not None and b is not None:
                    pairs.append((a, b))
                    seeds.append(int(s))
            if not pairs:
                continue
            kind = "baseline" if other in baselines else "refinenet variant"
            for s, pair in zip(seeds, pairs, strict=True):
                rows.append(_boot_row(ds, reference, other, kind, "seed", s, [pair], n_boot, seed, level))
            if len(pairs) > 1:
                rows.append(
                    _boot_row(ds, reference, other, kind, "pooled", np.nan, pairs, n_boot, seed, level)
                )
    if not rows:
        return None
    data = pd.DataFrame(rows)
    disp = []
    for _, r in data.iterrows():
        disp.append(
            {
                "Dataset": r["dataset"],
                "RefineNet": r["variant_a"],
                "vs": r["variant_b"],
                "Pairing": f"seed {int(r['seed'])}"
                if r["pairing"] == "seed"
                else f"pooled ({int(r['n_pairs'])} seeds)",
                "Images": str(int(r["n_images"])),
                "Δ IoU (%)": fmt_num(r["diff_pct"], 2, signed=True),
                f"{int(level * 100)}% CI": f"[{r['ci_low_pct']:+.2f}, {r['ci_high_pct']:+.2f}]",
                "CI excludes 0": "yes" if r["significant"] else "no",
            }
        )
    notes = [
        f"Δ = mIoU(RefineNet variant) − mIoU(other), percentage points. Paired bootstrap over validation "
        f"images ({n_boot} resamples, seed {seed}, percentile interval): the same resampled image "
        f"indices for both models; mIoU = nanmean over classes of ΣI/ΣU. Runs are paired by seed; the "
        f"pooled row averages the per-seed differences under one image resample (image sampling "
        f"uncertainty only; the seed spread is in the comparison tables)."
    ]
    return Table(
        "bootstrap_miou_diff",
        "RefineNet vs baselines: mIoU difference with paired-bootstrap CI",
        data,
        pd.DataFrame(disp),
        notes,
    )


def _boot_row(ds, a, b, kind, pairing, s, pairs, n_boot, seed, level) -> dict[str, object]:
    res = paired_bootstrap(pairs, n_boot=n_boot, level=level, seed=seed)
    return {
        "dataset": ds,
        "variant_a": a,
        "variant_b": b,
        "comparison": kind,
        "pairing": pairing,
        "seed": s,
        "n_pairs": len(pairs),
        "n_images": res.n_images,
        "diff_pct": res.diff * 100,
        "ci_low_pct": res.low * 100,
        "ci_high_pct": res.high * 100,
        "level": level,
        "significant": int(res.low > 0 or res.high < 0),
    }


# ----------------------------------------------------------------------------- failed and missing


def failed_runs_table(runs: SuiteRuns) -> Table:
    """Every trial that did not finish (FAILED, KILLED, RUNNING, ...) with its error tag."""
    t = runs.trials[runs.trials["status"] != FINISHED]
    done = runs.finished()
    ok = set(zip(done["dataset"], done["variant"], done["seed"], strict=True))
    data = pd.DataFrame(
        {
            "dataset": t["dataset"],
            "variant": t["variant"],
            "seed": t["seed"],
            "status": t["status"],
            "run_id": t["run_id"],
            "error": t["error"],
            "later_finished": [
                int((d, v, s) in ok) for d, v, s in zip(t["dataset"], t["variant"], t["seed"], strict=True)
            ],
        }
    ).reset_index(drop=True)
    disp = pd.DataFrame(
        {
            "Dataset": data["dataset"],
            "Variant": data["variant"],
            "Seed": [str(s) if _finite(s) else "–" for s in data["seed"]],
            "Status": data["status"],
            "Run": data["run_id"].str[:8],
            "Error": [(e[:160] + "…" if len(e) > 160 else e) or "–" for e in data["error"].astype(str)],
            "Re-run finished": ["yes" if x else "no" for x in data["later_finished"]],
        }
    )
    return Table(
        "failed_runs",
        "Failed and unfinished runs",
        data,
        disp,
        ["Trials whose MLflow status is not FINISHED; 'error' is the trial's error tag."],
    )


def missing_runs_table(
    runs: SuiteRuns, expected_variants: Sequence[str] = (), expected_seeds: Sequence[int] = ()
) -> Table:
    """(dataset, variant, seed) cells with no FINISHED run: the expected grid if given, else every
    variant that ran on a dataset x every seed any variant of that dataset ran with."""
    rows = [
        {"dataset": ds, "variant": "", "seed": pd.NA, "reason": "no MLflow experiment for this dataset"}
        for ds in runs.missing_datasets
    ]
    for ds in runs.datasets:
        t = runs.trials[runs.trials["dataset"] == ds]
        variants = list(expected_variants) or sorted(set(t["variant"]))
        seeds = [int(s) for s in expected_seeds] or sorted(int(s) for s in set(t["seed"].dropna()))
        for v in variants:
            for s in seeds:
                cell = t[(t["variant"] == v) & (t["seed"] == s)]
                if (cell["status"] == FINISHED).any():
                    continue
                reason = (
                    f"only unfinished runs ({', '.join(sorted(set(cell['status'])))})"
                    if len(cell)
                    else "no run logged"
                )
                rows.append({"dataset": ds, "variant": v, "seed": s, "reason": reason})
    data = pd.DataFrame(rows, columns=["dataset", "variant", "seed", "reason"])
    data["seed"] = data["seed"].astype("Int64")
    disp = pd.DataFrame(
        {
            "Dataset": data["dataset"],
            "Variant": data["variant"].replace("", "–"),
            "Seed": [str(s) if not pd.isna(s) else "–" for s in data["seed"]],
            "Reason": data["reason"],
        }
    )
    source = (
        "the expected grid given on the command line"
        if expected_variants or expected_seeds
        else "every variant seen on a dataset x every seed seen on that dataset"
    )
    return Table("missing_runs", "Missing runs", data, disp, [f"Expected cells from {source}."])
