"""Reading the suite's trials from MLflow."""

import pytest
from report_fixture import FAILED, VARIANTS

from pipelines.report.runs import ArtifactCache, cascade_label, load_suite, metric_history


@pytest.fixture(scope="module")
def suite(store):
    return load_suite(store.uri, "quick", ["synthetic", "cityscapes"])


def test_loads_every_trial_with_status_params_and_final_metrics(store, suite):
    t = suite.trials
    n_finished = sum(len(v[3]) for v in VARIANTS.values())
    assert len(t) == n_finished + len(FAILED) + 1  # + the superseded re-run
    assert set(t["tags.kind"]) == {"trial"}  # the parent sweep run is not a trial
    assert suite.datasets == ["synthetic"] and suite.missing_datasets == ["cityscapes"]
    assert str(t["seed"].dtype) == "Int64"
    row = t[t["run_id"] == store.runs[("synthetic", "refinenet", 1)]].iloc[0]
    assert (row["model"], row["variant"], row["seed"], row["backbone"]) == (
        "refinenet",
        "refinenet",
        1,
        "resnet18",
    )
    assert (row["cascade"], row["crp_blocks"], row["preset"]) == ("4-cascaded", 2.0, "paper")
    assert row["metrics.val/mIoU"] == pytest.approx(store.metrics[row["run_id"]]["val/mIoU"])
    failed = t[t["status"] == "FAILED"]
    assert sorted(zip(failed["variant"], failed["seed"], failed["error"], strict=True)) == sorted(FAILED)


def test_a_rerun_supersedes_the_older_finished_run(store, suite):
    t = suite.trials.set_index("run_id")
    assert t.loc[store.runs[("synthetic", "deeplabv2-old", 0)], "superseded"]
    assert not t.loc[store.runs[("synthetic", "deeplabv2", 0)], "superseded"]
    fin = suite.finished("synthetic")
    assert len(fin[(fin["variant"] == "deeplabv2") & (fin["seed"] == 0)]) == 1


def test_metric_history_has_the_logged_curve(store):
    rid = store.runs[("synthetic", "refinenet", 0)]
    h = metric_history(store.uri, [rid])
    final = store.metrics[rid]["val/mIoU"]
    assert h["step"].tolist() == [10, 20, 30]
    assert h["value"].tolist() == pytest.approx([0.5 * final, 0.8 * final, final])


def test_artifacts_are_downloaded_and_a_missing_one_is_recorded(store, tmp_path):
    cache = ArtifactCache(store.uri, tmp_path)
    rid = store.runs[("synthetic", "deeplabv2", 1)]
    classes, iou = cache.per_class_iou(rid)
    assert classes == ["background", "square", "circle"] and iou[2] != iou[2]  # null -> NaN
    stats = cache.per_image_stats(rid)
    assert (stats["intersection"] == store.stats[rid]["intersection"]).all()
    failed = store.runs[("synthetic", "fcn8s-failed", 2)]
    assert cache.per_image_stats(failed) is None
    assert cache.missing == [(failed, "per_image_stats.npz")]


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("4", "4-cascaded"),
        ("4.0", "4-cascaded"),
        (1, "single"),
        ("single", "single"),
        ("2", "2-cascaded"),
        ("4-2scale", "4-cascaded 2-scale"),
        ("None", ""),
        ("7", "7"),
    ],
)
def test_cascade_label(value, label):
    assert cascade_label(value) == label


def test_bad_tracking_uri_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="absolute"):
        load_suite("sqlite:///rel/mlflow.db", "quick")
    with pytest.raises(FileNotFoundError, match="No MLflow database"):
        load_suite(f"sqlite:///{tmp_path / 'none.db'}", "quick")
