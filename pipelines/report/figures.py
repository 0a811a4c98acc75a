"""The report's figures (seaborn, PNG, fixed pixel sizes: figsize x DPI, no tight bounding box).

- validation mIoU against training iterations, per variant (mean ± sd over seeds);
- per-class IoU (heatmap variants x classes);
- qualitative grid: image, ground truth, each variant's prediction for a fixed set of validation images;
- boundary quality (val/boundary_IoU) per variant;
- peak training memory and training throughput against input resolution (profile stage);
- the paired-bootstrap mIoU differences with their confidence intervals.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from PIL import Image  # noqa: E402

DPI = 100
WIDE = (9.0, 5.0)  # inches: 900 x 500 px
PANEL_IN = 2.2  # size of one qualitative-grid panel, inches
IGNORE_COLOR = (255, 255, 255)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _legend_outside(ax: plt.Axes, title: str | None = None) -> None:
    if ax.get_legend() is not None:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), title=title, frameon=False)


def curves_figure(history: pd.DataFrame, path: Path, dataset: str) -> Path:
    """Validation mIoU (%) against iterations; ``history`` has columns variant, seed, step, value."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=WIDE, layout="constrained")
    h = history.assign(miou=history["value"] * 100)
    n_seeds = h.groupby("variant")["seed"].nunique().max()
    sns.lineplot(
        data=h,
        x="step",
        y="miou",
        hue="variant",
        style="variant",
        markers=True,
        dashes=False,
        errorbar="sd" if n_seeds > 1 else None,
        ax=ax,
    )
    ax.set(
        xlabel="training iteration",
        ylabel="validation mIoU (%)",
        title=f"{dataset}: validation mIoU during training"
        + (" (mean ± sd over seeds)" if n_seeds > 1 else ""),
    )
    _legend_outside(ax, "variant")
    return _save(fig, path)


def per_class_figure(per_class: pd.DataFrame, path: Path, dataset: str) -> Path:
    """Heatmap of per-class IoU (%), rows = classes, columns = variants (mean over seeds)."""
    sns.set_theme(style="white", context="notebook")
    table = (
        per_class.pivot_table(index="class", columns="variant", values="iou", aggfunc="mean", sort=False)
        * 100
    )
    n_cls, n_var = table.shape
    fig, ax = plt.subplots(figsize=per_class_figsize(n_cls, n_var), layout="constrained")
    sns.heatmap(
        table,
        annot=n_cls <= 40,
        fmt=".0f",
        cmap="viridis",
        vmin=0,
        vmax=100,
        ax=ax,
        cbar_kws={"label": "IoU (%)"},
        linewidths=0.5,
        annot_kws={"fontsize": 8},
    )
    title = f"{dataset}: per-class IoU (mean over seeds)"
    if table.isna().to_numpy().any():
        title += "\nblank cell = class absent from ground truth and predictions (IoU undefined)"
    ax.set(xlabel="variant", ylabel="class", title=title)
    ax.tick_params(axis="y", labelrotation=0)
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    return _save(fig, path)


def per_class_figsize(n_classes: int, n_variants: int) -> tuple[float, float]:
    """Inches for the per-class heatmap: grows with classes (rows) and variants (columns)."""
    return (max(6.0, 3.5 + 1.1 * n_variants), max(4.0, 2.2 + 0.32 * n_classes))


def boundary_figure(values: pd.DataFrame, path: Path, dataset: str) -> Path:
    """Boundary IoU (%) per variant: bar = mean over seeds, dots = single seeds."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=WIDE, layout="constrained")
    v = values.assign(b=values["value"] * 100)
    order = list(dict.fromkeys(v["variant"]))
    sns.barplot(data=v, x="variant", y="b", order=order, errorbar=None, color="#9ecae1", ax=ax)
    sns.stripplot(data=v, x="variant", y="b", order=order, color="#08519c", size=6, jitter=0.1, ax=ax)
    ax.set(
        xlabel="", ylabel="boundary IoU (%)", title=f"{dataset}: boundary quality (bars: mean, dots: seeds)"
    )
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    return _save(fig, path)


def _colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:] = IGNORE_COLOR
    lut[: len(palette)] = palette
    return lut[label]


def _find_image(root: Path, split: str, image_id: str) -> Path | None:
    for ext in (".jpg", ".png", ".jpeg"):
        p = root / "images" / split / f"{image_id}{ext}"
        if p.exists():
            return p
    return None


def qualitative_figure(
    prepared: Path,
    predictions: dict[str, Path],
    image_ids: Sequence[str],
    path: Path,
    dataset: str,
    split: str = "val",
) -> Path:
    """Grid: one row per validation image; columns image, ground truth, one per variant's prediction.

    ``predictions`` maps variant -> folder of palette PNGs ``<id>.png``; ``prepared`` is
    data/prepared/<ds>/ (meta.json gives class names and palette). Missing files show as a blank
    panel that says so.
    """
    sns.set_theme(style="white")
    meta_path = prepared / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    palette = np.array(meta.get("palette", []), dtype=np.uint8).reshape(-1, 3)
    classes = list(meta.get("classes", []))
    columns = ["image", "ground truth", *predictions]
    n_rows, n_cols = len(image_ids), len(columns)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=qualitative_figsize(n_rows, n_cols), squeeze=False, layout="constrained"
    )
    seen: set[int] = set()
    for r, image_id in enumerate(image_ids):
        panels: list[np.ndarray | None] = []
        img = _find_image(prepared, split, image_id)
        panels.append(np.asarray(Image.open(img).convert("RGB")) if img else None)
        gt = prepared / "labels" / split / f"{image_id}.png"
        if gt.exists() and len(palette):
            lab = np.asarray(Image.open(gt))
            seen.update(int(x) for x in np.unique(lab) if x < len(palette))
            panels.append(_colorize(lab, palette))
        else:
            panels.append(None)
        for folder in predictions.values():
            p = folder / f"{image_id}.png"
            if p.exists():
                pred = Image.open(p)
                if pred.mode == "P" or len(palette) == 0:
                    if pred.mode == "P":
                        seen.update(int(x) for x in np.unique(np.asarray(pred)) if x < max(len(palette), 1))
                    panels.append(np.asarray(pred.convert("RGB")))
                else:
                    arr = np.asarray(pred.convert("L"))
                    seen.update(int(x) for x in np.unique(arr) if x < len(palette))
                    panels.append(_colorize(arr, palette))
            else:
                panels.append(None)
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if panel is None:
                ax.text(
                    0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes, fontsize=9
                )
            else:
                ax.imshow(panel, interpolation="nearest")
            if r == 0:
                ax.set_title(columns[c], fontsize=10)
            if c == 0:
                ax.set_ylabel(image_id, fontsize=9)
    if classes and len(palette):
        handles = [
            Patch(facecolor=palette[k] / 255.0, edgecolor="0.3", label=classes[k])
            for k in sorted(seen)
            if k < len(classes)
        ][:30]
        handles.append(Patch(facecolor=np.array(IGNORE_COLOR) / 255.0, edgecolor="0.3", label="ignore"))
        fig.legend(
            handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False
        )
    fig.suptitle(f"{dataset}: validation images, ground truth and predictions")
    return _save(fig, path)


def qualitative_figsize(n_rows: int, n_cols: int) -> tuple[float, float]:
    """Inches for the qualitative grid: PANEL_IN per panel plus room for titles and the class legend."""
    return (PANEL_IN * n_cols + 0.4, PANEL_IN * n_rows + 1.4)


def profile_figure(profile: pd.DataFrame, path: Path) -> Path:
    """Peak training memory and training throughput against input resolution, one line per variant.

    Dilated (output-stride-8) heads are drawn dashed, RefineNet solid: the paper's argument (§1) is
    that RefineNet avoids the memory of stride-8 dilated features.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    p = profile.copy()
    p["megapixels"] = p["height"] * p["width"] / 1e6
    p["family"] = np.where(
        p["model"].str.startswith("deeplab"),
        "dilated (OS 8)",
        np.where(p["model"].str.startswith("refinenet"), "RefineNet", "other"),
    )
    batch = int(p["batch"].mode().iloc[0])
    p = p[p["batch"] == batch]
    multi_precision = p["precision"].nunique() > 1
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 5.0), layout="constrained")
    variants = sorted(set(p["variant"]))
    colors = dict(zip(variants, sns.color_palette("tab10", len(variants)), strict=True))
    style_col = "precision" if multi_precision else "family"
    styles = sorted(set(p[style_col]))
    dashes = {"RefineNet": "", "dilated (OS 8)": (4, 2), "other": (1, 1)}
    marks = {"RefineNet": "o", "dilated (OS 8)": "X", "other": "s"}
    family = style_col == "family"
    style_dashes = {k: dashes.get(k, (2, 1)) for k in styles} if family else True
    style_marks = {k: marks.get(k, "D") for k in styles} if family else True
    for ax, col, label in (
        (axes[0], "peak_mem_alloc_gb", "peak training memory (GB)"),
        (axes[1], "train_img_per_s", "training throughput (images/s)"),
    ):
        d = p.dropna(subset=[col])
        if d.empty:
            ax.text(
                0.5,
                0.5,
                "not measured on this device\n(memory needs a CUDA GPU)",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            ax.set(xticks=[], yticks=[], ylabel=label)
            continue
        else:
            sns.lineplot(
                data=d,
                x="megapixels",
                y=col,
                hue="variant",
                hue_order=variants,
                palette=colors,
                style=style_col,
                style_order=styles,
                dashes=style_dashes,
                markers=style_marks,
                ax=ax,
                legend=False,
            )
        ax.set(xlabel="input size H×W (axis scaled by pixel count)", ylabel=label)
        ticks = p.drop_duplicates("megapixels").sort_values("megapixels")
        ax.set_xticks(ticks["megapixels"])
        ax.set_xticklabels(
            [f"{int(h)}×{int(w)}" for h, w in zip(ticks["height"], ticks["width"], strict=True)],
            rotation=30,
            ha="right",
            fontsize=9,
        )
    handles = [Line2D([], [], color=colors[v], lw=3, label=v) for v in variants]
    handles.append(Line2D([], [], color="none", label=""))
    if family:
        handles += [
            Line2D(
                [],
                [],
                color="0.3",
                marker=marks.get(k, "D"),
                linestyle=(0, dashes[k]) if dashes.get(k) else "-",
                label=k,
            )
            for k in styles
        ]
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    devices = sorted(set(p.get("device_name", pd.Series(dtype=str)).dropna()) - {""})
    precision = ", ".join(sorted(set(p["precision"])))
    fig.suptitle(
        f"Memory and speed vs input size (batch {batch}, {precision}; {', '.join(devices) or 'device ?'})"
    )
    return _save(fig, path)


def bootstrap_figure(boot: pd.DataFrame, path: Path) -> Path:
    """Forest plot: mIoU difference (RefineNet − other) with its bootstrap CI, per dataset."""
    sns.set_theme(style="whitegrid", context="notebook")
    pooled = boot[boot["pairing"] == "pooled"]
    has_pooled = boot.set_index(["dataset", "variant_b"]).index.isin(
        pooled.set_index(["dataset", "variant_b"]).index
    )
    b = pd.concat([pooled, boot[~has_pooled]]).sort_values(["dataset", "variant_b"], kind="stable")
    b["label"] = [
        f"{d}: {a} − {o}" + ("" if p == "pooled" else f" (seed {int(s)})")
        for d, a, o, p, s in zip(
            b["dataset"], b["variant_a"], b["variant_b"], b["pairing"], b["seed"], strict=True
        )
    ]
    fig, ax = plt.subplots(figsize=(9.0, bootstrap_fig_height(len(b))), layout="constrained")
    y = np.arange(len(b))
    ax.errorbar(
        b["diff_pct"],
        y,
        xerr=[b["diff_pct"] - b["ci_low_pct"], b["ci_high_pct"] - b["diff_pct"]],
        fmt="o",
        color="#08519c",
        capsize=4,
    )
    ax.axvline(0, color="0.3", lw=1, ls="--")
    ax.set_yticks(y)
    ax.set_yticklabels(b["label"])
    ax.invert_yaxis()
    level = int(round(float(boot["level"].iloc[0]) * 100))
    ax.set(xlabel=f"mIoU difference (points), {level}% paired-bootstrap CI", ylabel="")
    fig.suptitle("RefineNet vs other models: mIoU gaps and their uncertainty")
    return _save(fig, path)


def bootstrap_fig_height(n_rows: int) -> float:
    return max(3.0, 1.6 + 0.45 * n_rows)
