"""The `prepare` stage: convert one dataset's raw files into the common prepared layout.

    python -m pipelines.prepare <dataset> [--raw-root data/raw] [--out-root data/prepared]
                                          [--params params.yaml] [--set KEY=VALUE ...]

Writes `<out-root>/<dataset>/{meta.json, images/<split>/, labels/<split>/}` (docs/architecture.md)
atomically: archives are extracted and converted in temporary folders next to the target, which
replaces an older version only when the conversion succeeded. With `--params`, the folders come
from `paths.raw` / `paths.prepared` and the converter options from
`suite.dataset_settings.<dataset>.prepare` of params.yaml; `--raw-root`, `--out-root` and `--set`
override them.
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from pipelines.datasets.download import LOCK_NAME, ChecksumLock
from pipelines.datasets.errors import DatasetError, MissingRawDataError
from pipelines.datasets.extract import is_archive, safe_extract
from pipelines.datasets.layout import load_meta
from pipelines.datasets.registry import DatasetSpec, get_spec, list_datasets, new_writer


def resolve_options(spec: DatasetSpec, options: dict[str, Any]) -> dict[str, Any]:
    """The converter's options with defaults filled in; unknown options are an error listing valid ones."""
    params = {
        p.name: p.default
        for p in inspect.signature(spec.convert).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    unknown = sorted(set(options) - set(params))
    if unknown:
        valid = ", ".join(f"{k} (default {v!r})" for k, v in params.items()) or "none"
        raise DatasetError(f"{spec.name}: unknown prepare option(s) {unknown}; valid options: {valid}")
    return {**params, **options}


def prepare_dataset(
    name: str, raw_root: Path | str = "data/raw", out_root: Path | str = "data/prepared", **options: Any
) -> Path:
    """Convert dataset `name` from `raw_root/name` into `out_root/name`; return that folder.

    Options are the converter's keyword-only parameters (e.g. `seed`, `n_train`, `n_val`, `size` for
    "synthetic", `train_split` for "voc2012").
    """
    spec = get_spec(name)
    options = resolve_options(spec, options)
    raw_dir, out_root = Path(raw_root) / name, Path(out_root)
    lock = ChecksumLock(raw_dir / LOCK_NAME)
    sources: dict[str, str] = {}
    missing = []
    for archive in spec.archives:
        path, entry = raw_dir / archive.filename, lock.get(archive.filename)
        if not path.is_file() or entry is None:
            missing.append(archive.filename)
        elif entry.get("size") != path.stat().st_size:
            raise MissingRawDataError(
                f"{path} changed since it was fetched (size {path.stat().st_size}, "
                f"recorded {entry.get('size')}); "
                f"run `python -m pipelines.fetch {name} --raw-root {raw_root}` again"
            )
        else:
            sources[archive.filename] = str(entry["sha256"])
    if missing:
        raise MissingRawDataError(
            f"{name}: raw file(s) {missing} not fetched and verified in {raw_dir}; run "
            f"`python -m pipelines.fetch {name} --raw-root {raw_root}` first"
        )
    out_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.work-", dir=out_root))
    try:
        inputs: dict[str, Path] = {}
        for archive in spec.archives:
            path = raw_dir / archive.filename
            if archive.extract and is_archive(path):
                inputs[archive.filename] = safe_extract(path, work / archive.filename.replace(".", "_"))
            else:
                inputs[archive.filename] = path
        with new_writer(spec, out_root / name) as writer:
            spec.convert(inputs, writer, **options)
            return writer.commit(sources=sources, converter_version=spec.converter_version, options=options)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _parse_set(items: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DatasetError(f"--set {item!r}: expected KEY=VALUE, e.g. --set seed=1")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; a DatasetError (or a bad params file) becomes a one-line message and exit code 2."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help=f"one of: {', '.join(list_datasets())}")
    parser.add_argument("--raw-root", default=None, type=Path, help="raw files (default data/raw)")
    parser.add_argument("--out-root", default=None, type=Path, help="output (default data/prepared)")
    parser.add_argument("--params", default=None, type=Path, help="params.yaml: paths and converter options")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="converter option, e.g. seed=1 (repeatable; overrides params.yaml)",
    )
    args = parser.parse_args(argv)
    try:
        raw_root, out_root, options = Path("data/raw"), Path("data/prepared"), {}
        if args.params is not None:
            from pipelines.config import load_params

            params = load_params(args.params)
            raw_root, out_root = params.path(params.paths.raw), params.path(params.paths.prepared)
            settings = params.suite.dataset_settings.get(args.dataset)
            options = dict(settings.prepare) if settings is not None else {}
        raw_root, out_root = args.raw_root or raw_root, args.out_root or out_root
        root = prepare_dataset(args.dataset, raw_root, out_root, **{**options, **_parse_set(args.set)})
    except (DatasetError, ValueError) as e:  # config.ParamsError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = load_meta(root)
    print(f"{args.dataset}: prepared {meta['splits']} in {root}")
    expected = get_spec(args.dataset).expected_splits
    if expected and dict(meta["splits"]) != dict(expected):
        print(f"note: the full {args.dataset} has {dict(expected)}; these raw files give {meta['splits']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
