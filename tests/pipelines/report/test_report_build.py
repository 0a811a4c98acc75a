"""End to end: `python -m pipelines.report` on the fixture store writes a complete reports/ folder."""

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipelines.report.__main__ import main
from pipelines.report.render import latex_table, markdown_table
from pipelines.report.tables import Table

# Identifier columns may hold text; every other CSV column must be numeric.
TEXT_COLUMNS = {
    "dataset",
    "variant",
    "model",
    "backbone",
    "cascade",
    "preset",
    "variants",
    "paper_method",
    "status",
    "run_id",
    "error",
    "reason",
    "comparison",
    "pairing",
    "variant_a",
    "variant_b",
    "precision",
    "device_name",
    "torch_version",
    "cuda_version",
}
# Expected pixel sizes (figsize x 100 dpi), computed by hand from the fixture: 7 variants with runs,
# 3 classes, 2 prediction images, 6 bootstrap comparisons.
FIGURES = {
    "synthetic_val_miou_curves.png": (900, 500),
    "synthetic_boundary_iou.png": (900, 500),
    "synthetic_per_class_iou.png": (1120, 400),  # (3.5 + 1.1 * 7) x max(4, 2.2 + 0.32 * 3) in
    "synthetic_qualitative.png": (2020, 580),  # (2.2 * 9 + 0.4) x (2.2 * 2 + 1.4) in
    "speed_memory_vs_resolution.png": (1200, 500),
    "bootstrap_miou_diff.png": (900, 430),  # 9 x (1.6 + 0.45 * 6) in
}


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    rc = main(
        [
            "--suite",
            "quick",
            "--tracking-uri",
            store.uri,
            "--profile",
            str(store.profile),
            "--prepared-root",
            str(store.prepared_root),
            "--out",
            str(out),
            "--n-boot",
            "300",
            "--expected-seeds",
            "0,1,2",
        ]
    )
    assert rc == 0
    return out


def test_index_names_suite_commit_date_and_links_every_file(report):
    text = (report / "README.md").read_text()
    assert "- **Suite**: quick" in text
    assert re.search(r"\*\*Report code commit\*\*: \S+", text)
    assert re.search(r"\*\*Generated\*\*: \d{4}-\d{2}-\d{2}", text)
    assert "abc123def456: 22" in text  # trial commits from the git_commit tag
    files = sorted(
        p.relative_to(report).as_posix() for p in report.rglob("*") if p.is_file() and p.name != "README.md"
    )
    assert files
    for f in files:
        assert f"]({f})" in text, f"{f} is not linked from README.md"
    assert "## Failed and missing runs" in text and "CUDA out of memory" in text


def test_every_figure_is_a_png_of_the_expected_size(report):
    pngs = {p.name for p in (report / "figures").glob("*.png")}
    assert pngs == set(FIGURES)
    for name, size in FIGURES.items():
        with Image.open(report / "figures" / name) as im:
            im.verify()
        with Image.open(report / "figures" / name) as im:
            assert im.format == "PNG"
            assert abs(im.size[0] - size[0]) <= 1 and abs(im.size[1] - size[1]) <= 1, (name, im.size)
            assert np.asarray(im.convert("L")).std() > 5  # not blank


def test_csvs_are_tidy_and_numeric(report):
    csvs = sorted((report / "tables").glob("*.csv"))
    assert {p.stem for p in csvs} >= {
        "comparison_synthetic",
        "table9_cascades",
        "table2_ablation",
        "presets",
        "speed_memory",
        "bootstrap_miou_diff",
        "failed_runs",
        "missing_runs",
    }
    for p in csvs:
        df = pd.read_csv(p)
        for col in df.columns:
            if col not in TEXT_COLUMNS and df[col].notna().any():
                assert pd.api.types.is_numeric_dtype(df[col]), f"{p.name}: column {col} is not numeric"
        cells = [str(c) for c in df.to_numpy().ravel()]
        assert not any("±" in c or c == "no run" for c in cells), p.name
    comp = pd.read_csv(report / "tables" / "comparison_synthetic.csv").set_index("variant")
    assert comp.loc["refinenet", "mIoU_pct_mean"] == pytest.approx(61.3333333)
    assert np.isnan(comp.loc["unet", "mIoU_pct_mean"])


def test_markdown_and_latex_tables(report):
    md = (report / "tables" / "comparison_synthetic.md").read_text()
    assert "| refinenet | refinenet | resnet18 | 3 | 90.7 ± 0.8 |" in md
    assert "| unet | unet | resnet18 | 0 | no run |" in md
    tex = (report / "tables" / "comparison_synthetic.tex").read_text()
    rows = [line for line in tex.splitlines() if line.endswith(r"\\")]
    n_rows = len(pd.read_csv(report / "tables" / "comparison_synthetic.csv"))  # data rows
    assert len(rows) == 1 + n_rows
    assert all(r.count("&") == rows[0].count("&") for r in rows)
    assert r"refinenet & refinenet & resnet18 & 3 & 90.7 $\pm$ 0.8" in tex
    assert r"IoU (\%)" in tex and r"\begin{tabular}" in tex and r"\bottomrule" in tex


def test_render_escapes_latex_and_markdown():
    t = Table("x_y", "A_b 50%", pd.DataFrame({"v": [1]}), pd.DataFrame({"name": ["a_b|c"], "val": ["1 ± 2"]}))
    assert markdown_table(t.display).splitlines()[2] == r"| a_b\|c | 1 ± 2 |"
    tex = latex_table(t)
    assert r"a\_b|c & 1 $\pm$ 2 \\" in tex and r"A\_b 50\%" in tex and r"\label{tab:x-y}" in tex


def test_unknown_suite_is_a_clear_error(store, tmp_path, capsys):
    assert main(["--suite", "nosuch", "--tracking-uri", store.uri, "--out", str(tmp_path)]) == 2
    assert "No MLflow experiment named 'nosuch/<dataset>'" in capsys.readouterr().err
