"""params.yaml validation: the real file loads; bad keys, types and names fail before anything runs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipelines.config import ParamsError, load_params, plan_dataset_trials, resolved_model_options

REPO = Path(__file__).resolve().parents[2]


def _raw() -> dict:
    with (REPO / "params.yaml").open() as fh:
        return yaml.safe_load(fh)


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_repository_params_load_and_the_switch_selects_quick():
    params = load_params(REPO / "params.yaml")
    assert params.suite.name == "quick"
    assert params.suite.datasets == ["synthetic"]
    assert "refinenet" in params.suite.variants
    trials = plan_dataset_trials(params, "synthetic")
    assert len(trials) == len(params.suite.variants) * len(params.suite.seeds)
    first = trials[0]
    assert first.config["dataset_root"] == str(REPO / "data" / "prepared" / "synthetic")
    assert first.config["model_options"]["backbone"] == "resnet18"


def test_paper_suite_has_seven_datasets_and_its_recipe(tmp_path):
    raw = _raw()
    raw["suite"] = copy.deepcopy(raw["suites"]["paper"])
    params_path = _write(tmp_path, raw)
    text = yaml.safe_load(params_path.read_text())
    assert len(text["suite"]["datasets"]) == 7
    assert text["suite"]["recipe"]["optimizer"] == "sgd"
    assert text["suite"]["model_options"]["backbone"] == "resnet101"


def test_model_options_precedence(tmp_path):
    raw = _raw()
    raw["suite"]["dataset_settings"]["synthetic"]["model_options"] = {"crp_blocks": 3}
    params = load_params(_write(tmp_path, raw))
    # dataset setting over suite-wide options, variant over both
    assert resolved_model_options(params, "synthetic", "refinenet")["crp_blocks"] == 3
    assert resolved_model_options(params, "synthetic", "refinenet-no-crp")["crp_blocks"] == 0
    # options a model does not have are not passed to it
    assert "feature_widths" not in resolved_model_options(params, "synthetic", "unet")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["suite"].__setitem__("datasets", ["imagenet"]), "unknown dataset 'imagenet'"),
        (lambda r: r["variants"].__setitem__("x", {"model": "segformer"}), "unknown model 'segformer'"),
        (
            lambda r: r["variants"]["refinenet"]["options"].__setitem__("pooling", 3),
            "unknown option 'pooling'",
        ),
        (lambda r: r["suite"].__setitem__("variants", ["nope"]), "unknown variant 'nope'"),
        (lambda r: r["suite"]["recipe"].__setitem__("lr", "fast"), "lr: expected a number, got 'fast'"),
        (lambda r: r["suite"]["recipe"].__setitem__("iterations", 1.5), "expected an integer"),
        (lambda r: r["suite"]["recipe"].__setitem__("optimiser", "sgd"), "unknown recipe field 'optimiser'"),
        (lambda r: r["suite"]["recipe"].__setitem__("optimizer", "lbfgs"), "'lbfgs' is not allowed"),
        (lambda r: r["suite"].__setitem__("seeds", []), "at least one seed"),
        (lambda r: r["suite"]["resources"].__setitem__("gpus_per_trial", "one"), "expected a number"),
        (lambda r: r.__setitem__("extra", 1), "unknown key(s) 'extra'"),
        (lambda r: r["suite"].pop("seeds"), "missing required key 'seeds'"),
    ],
)
def test_bad_params_fail_with_the_key_and_allowed_values(tmp_path, mutate, message):
    raw = _raw()
    mutate(raw)
    with pytest.raises(ParamsError) as info:
        load_params(_write(tmp_path, raw))
    assert message in str(info.value)


def test_missing_params_file_says_how_to_fix(tmp_path):
    with pytest.raises(ParamsError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")


def test_bad_option_value_fails_at_load_time(tmp_path):
    raw = _raw()
    raw["variants"]["refinenet"]["options"]["cascade"] = "3-cascaded"
    with pytest.raises(ParamsError, match="variants.refinenet .*3-cascaded"):
        load_params(_write(tmp_path, raw))


def test_frozen_batchnorm_on_random_init_is_refused(tmp_path):
    raw = _raw()
    raw["suite"]["recipe"]["freeze_backbone_bn"] = True
    with pytest.raises(ParamsError, match="freeze_backbone_bn.*weights: imagenet"):
        load_params(_write(tmp_path, raw))


def test_profile_precision_must_be_known(tmp_path):
    raw = _raw()
    raw["suite"]["profile"]["precisions"] = ["fp16"]
    with pytest.raises(ParamsError, match="'fp16' is not allowed"):
        load_params(_write(tmp_path, raw))
