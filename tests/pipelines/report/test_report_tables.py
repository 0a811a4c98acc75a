"""Every table value equals the logged metrics; mean ± std, missing and failed runs are right."""

import numpy as np
import pandas as pd
import pytest
from report_fixture import VARIANTS

from pipelines.report import tables
from pipelines.report.bootstrap import paired_bootstrap
from pipelines.report.runs import ArtifactCache, load_suite

ALL_SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def suite(store):
    return load_suite(store.uri, "quick")


@pytest.fixture(scope="module")
def comparison(suite):
    return tables.comparison_table(suite, "synthetic", "refinenet", expected_variants=["deeplabv3"])


def _logged(store, variant, metric):
    return [
        store.metrics[store.runs[("synthetic", variant, s)]].get(metric, np.nan) for s in VARIANTS[variant][3]
    ]


def test_comparison_values_equal_the_logged_metrics(store, comparison):
    data = comparison.data.set_index("variant")
    for variant, (_, _, _, seeds) in VARIANTS.items():
        row = data.loc[variant]
        assert row["n_runs"] == len(seeds)
        if not seeds:
            continue
        for metric, key, _ in tables.ACCURACY_METRICS:
            vals = np.array(_logged(store, variant, metric)) * 100
            vals = vals[~np.isnan(vals)]
            assert row[f"{key}_n"] == len(vals)
            if len(vals):
                assert row[f"{key}_pct_mean"] == pytest.approx(vals.mean())
                assert row[f"{key}_pct_std"] == pytest.approx(vals.std(ddof=1))
        for metric, *_ in tables.MEASUREMENTS:
            assert row[metric] == pytest.approx(np.mean(_logged(store, variant, metric)))


def test_comparison_mean_std_hand_computed(comparison):
    data = comparison.data.set_index("variant")
    # refinenet: mIoU 60, 61, 63 % -> mean 61.333, sample std sqrt(7/3) = 1.5275
    assert data.loc["refinenet", "mIoU_pct_mean"] == pytest.approx(61.3333333)
    assert data.loc["refinenet", "mIoU_pct_std"] == pytest.approx(1.5275252)
    # fcn8s: seeds 0, 1 (seed 2 failed): 40, 41 -> 40.5 ± 0.7071
    assert data.loc["fcn8s", "mIoU_pct_mean"] == pytest.approx(40.5)
    assert data.loc["fcn8s", "mIoU_pct_std"] == pytest.approx(0.7071068)
    # deeplabv2 seed 0 was re-run: the superseded run (mIoU 15 %) is not averaged in -> 45, 46, 48
    assert data.loc["deeplabv2", "mIoU_pct_mean"] == pytest.approx(46.3333333)
    disp = comparison.display.set_index("Variant")
    assert disp.loc["refinenet", "IoU (%)"] == "61.3 ± 1.5"
    assert disp.loc["refinenet", "Seeds"] == "3"
    assert disp.loc["refinenet-no-crp", "IoU msc (%)"] == "not evaluated"


def test_cells_without_a_run_say_so_and_are_nan_in_csv(comparison):
    disp = comparison.display.set_index("Variant")
    data = comparison.data.set_index("variant")
    for variant in ("unet", "deeplabv3"):  # unet: only a FAILED run; deeplabv3: expected, never ran
        assert disp.loc[variant, "IoU (%)"] == tables.NO_RUN
        assert disp.loc[variant, "Params (M)"] == tables.NO_RUN
        assert np.isnan(data.loc[variant, "mIoU_pct_mean"]) and data.loc[variant, "n_runs"] == 0
    assert list(comparison.data["variant"][:2]) == ["refinenet", "refinenet-2cascaded"]  # reference first


def test_table9_groups_refinenet_by_cascade(suite):
    t = tables.cascade_table(suite, "refinenet")
    d = t.data.set_index("cascade")
    assert list(d.index) == ["single", "2-cascaded", "4-cascaded", "4-cascaded 2-scale"]
    assert d.loc["single", "mIoU_pct_mean"] == pytest.approx(np.mean([50, 51, 53]))
    assert d.loc["2-cascaded", "mIoU_pct_mean"] == pytest.approx(55.5)
    # 4-cascaded = the reference config only (no-crp and released differ in crp / preset)
    assert d.loc["4-cascaded", "variants"] == "refinenet"
    assert d.loc["4-cascaded", "mIoU_pct_mean"] == pytest.approx(61.3333333)
    assert d.loc["4-cascaded 2-scale", "n_runs"] == 0
    assert d["paper_nyudv2_res50_mIoU_pct"].tolist() == [40.3, 40.9, 42.5, 43.1]
    disp = t.display.set_index("Variant")
    assert disp.loc["4-cascaded 2-scale", "synthetic IoU (%)"] == tables.NO_RUN
    assert disp.loc["2-cascaded", "synthetic IoU (%)"] == "55.5 ± 0.7 (n=2)"


def test_table2_backbone_x_chained_pooling_x_msc(suite):
    t = tables.ablation_table(suite, "refinenet")
    d = t.data

    def cell(bb, chained, msc):
        r = d[(d["backbone"] == bb) & (d["chained_pooling"] == chained) & (d["msc_eval"] == msc)]
        assert len(r) == 1
        return r.iloc[0]

    assert cell("resnet18", 1, 0)["synthetic_mIoU_pct_mean"] == pytest.approx(61.3333333)
    assert cell("resnet18", 1, 1)["synthetic_mIoU_pct_mean"] == pytest.approx(63.3333333)  # val/mIoU_ms
    assert cell("resnet18", 0, 0)["synthetic_mIoU_pct_mean"] == pytest.approx(np.mean([52, 53, 55]))
    assert cell("resnet18", 0, 1)["synthetic_n"] == 0
    r50 = cell("resnet50", 0, 0)
    assert r50["paper_nyudv2_mIoU_pct"] == 40.4 and r50["paper_person_part_mIoU_pct"] == 64.1
    assert cell("resnet152", 1, 1)["paper_nyudv2_mIoU_pct"] == 46.5
    disp = t.display
    assert (disp["synthetic IoU (%)"] == tables.NOT_EVALUATED).sum() == 1
    assert (disp["synthetic IoU (%)"] == tables.NO_RUN).sum() == 6  # the paper's six rows


def test_presets_table(suite):
    d = tables.preset_table(suite, "refinenet").data.set_index("preset")
    assert d.loc["paper", "variants"] == "refinenet"
    assert d.loc["released", "mIoU_pct_mean"] == pytest.approx(np.mean([63, 64, 66]))


def test_bootstrap_table_matches_the_bootstrap_of_the_logged_stats(store, suite, tmp_path):
    t = tables.bootstrap_table(suite, ArtifactCache(store.uri, tmp_path), "refinenet", n_boot=300, seed=5)
    d = t.data
    pooled = d[(d["variant_b"] == "fcn8s") & (d["pairing"] == "pooled")].iloc[0]
    pairs = [
        (
            store.stats[store.runs[("synthetic", "refinenet", s)]],
            store.stats[store.runs[("synthetic", "fcn8s", s)]],
        )
        for s in (0, 1)
    ]
    ref = paired_bootstrap(pairs, n_boot=300, seed=5)
    assert pooled["diff_pct"] == pytest.approx(ref.diff * 100)
    assert (pooled["ci_low_pct"], pooled["ci_high_pct"]) == pytest.approx((ref.low * 100, ref.high * 100))
    assert pooled["n_pairs"] == 2 and pooled["significant"] == int(ref.low > 0 or ref.high < 0)
    assert set(d.loc[d["variant_b"] == "fcn8s", "pairing"]) == {"seed", "pooled"}
    assert "unet" not in set(d["variant_b"])  # no finished run to pair with
    assert set(d["variant_b"]) >= {"deeplabv2", "fcn8s", "refinenet-released"}


def test_failed_and_missing_runs_are_listed(suite):
    failed = tables.failed_runs_table(suite).data
    got = sorted(zip(failed["variant"], failed["seed"], failed["status"], strict=True))
    assert got == [("fcn8s", 2, "FAILED"), ("unet", 0, "FAILED")]
    assert set(failed["error"]) == {"RuntimeError: CUDA out of memory", "ValueError: bad crop size"}
    missing = tables.missing_runs_table(suite).data
    cells = {
        (v, int(s)): r for v, s, r in zip(missing["variant"], missing["seed"], missing["reason"], strict=True)
    }
    assert cells == {
        ("refinenet-2cascaded", 2): "no run logged",
        ("fcn8s", 2): "only unfinished runs (FAILED)",
        ("unet", 0): "only unfinished runs (FAILED)",
        ("unet", 1): "no run logged",
        ("unet", 2): "no run logged",
    }
    grid = tables.missing_runs_table(suite, ["refinenet", "deeplabv3"], [0, 3]).data
    assert sorted(zip(grid["variant"], grid["seed"], strict=True)) == [
        ("deeplabv3", 0),
        ("deeplabv3", 3),
        ("refinenet", 3),
    ]


def test_paper_suite_puts_paper_numbers_beside_ours(store):
    runs = load_suite(store.uri, "paper")
    t = tables.comparison_table(runs, "nyudv2", "refinenet", compare_paper=True)
    d = t.data
    ours = d[d["variant"] == "refinenet-res152"].iloc[0]
    assert ours["paper_method"] == "RefineNet-Res152" and ours["paper_mIoU_pct"] == 46.5
    # paper IoU (multi-scale, Table 3) vs our val/mIoU_ms: 47, 48 -> 47.5
    assert ours["diff_mIoU_pct"] == pytest.approx(47.5 - 46.5)
    assert ours["diff_pixel_acc_pct"] == pytest.approx(np.mean([75.0, 75.5]) - 73.6)
    fcn = d[d["paper_method"] == "FCN-32s"].iloc[0]  # a paper row with no run of ours
    assert fcn["n_runs"] == 0 and fcn["paper_mIoU_pct"] == 29.2
    disp = t.display.set_index("Variant")
    assert disp.loc["(FCN-32s)", "IoU (%)"] == tables.NO_RUN
    assert disp.loc["refinenet-res152", "Δ IoU"] == "+1.0"


def test_paper_results_file_holds_the_papers_tables():
    p = tables.load_paper_results()
    assert set(p["table"]) == set(range(1, 10))
    assert p[(p["table"] == 4) & (p["method"] == "RefineNet-Res152")]["value"].tolist() == [83.4]
    assert p[(p["table"] == 5) & (p["model"] == "refinenet")]["value"].tolist() == [73.6]
    assert pd.api.types.is_float_dtype(p["value"])


def test_speed_table_from_profile(store):
    prof = tables.load_profile(store.profile)
    t = tables.speed_table(prof)
    assert len(t.data) == 6 and t.data["peak_mem_alloc_gb"].isna().sum() == 2
    disp = t.display
    fcn = disp[disp["Variant"] == "fcn8s"]
    assert set(fcn["Peak train mem. (GB)"]) == {tables.NOT_MEASURED}
    assert disp[disp["Variant"] == "deeplabv2"]["Peak train mem. (GB)"].tolist() == ["2.00", "8.00"]


@pytest.mark.parametrize(
    ("name", "key"),
    [("NYUv2", "nyudv2"), ("person-part", "person_part"), ("VOC2012", "voc2012"), ("synthetic", "synthetic")],
)
def test_canonical_dataset(name, key):
    assert tables.canonical_dataset(name) == key
