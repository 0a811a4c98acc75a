"""CLI of the report stage: ``python -m pipelines.report --suite quick --out reports``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else the absolute sqlite:///<cwd>/mlflow.db (stack.md, MLflow)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def _csv_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipelines.report", description=__doc__)
    p.add_argument(
        "--params",
        type=Path,
        default=None,
        help="take suite, datasets, expected variants and seeds, paths and MLflow URI from this params.yaml "
        "(the DVC stage); explicit flags still win",
    )
    p.add_argument(
        "--suite", default=None, help="suite name; experiments are '<suite>/<dataset>' (default quick)"
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///<abs cwd>/mlflow.db)",
    )
    p.add_argument(
        "--datasets",
        nargs="*",
        default=None,
        help="datasets to report (default: every experiment of the suite); "
        "a listed dataset with no experiment is reported as missing",
    )
    p.add_argument(
        "--profile", type=Path, default=None, help="profile stage CSV (default results/profile.csv)"
    )
    p.add_argument(
        "--prepared-root",
        type=Path,
        default=None,
        help="(default data/prepared) prepared datasets (images and labels for the qualitative grid)",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default reports/)")
    p.add_argument(
        "--expected-variants",
        type=_csv_list,
        default=None,
        help="comma-separated variants every dataset should have (for the missing-runs list)",
    )
    p.add_argument(
        "--expected-seeds",
        type=_csv_list,
        default=None,
        help="comma-separated seeds every variant should have run with",
    )
    p.add_argument("--reference", default="refinenet", help="RefineNet variant compared with the baselines")
    paper = p.add_mutually_exclusive_group()
    paper.add_argument(
        "--paper-compare",
        dest="compare_paper",
        action="store_true",
        default=None,
        help="put the paper's numbers beside ours (default: only for --suite paper)",
    )
    paper.add_argument("--no-paper-compare", dest="compare_paper", action="store_false")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--boot-seed", type=int, default=0, help="seed of the bootstrap resampling")
    p.add_argument("--n-qualitative", type=int, default=4, help="validation images in the qualitative grid")
    args = p.parse_args(argv)
    _fill_defaults(args)
    try:
        args.expected_seeds = [int(s) for s in args.expected_seeds]
    except ValueError:
        p.error(f"--expected-seeds takes integers separated by commas, got {args.expected_seeds}")
    if args.n_boot < 100:
        p.error("--n-boot must be at least 100 for a 95% percentile interval")
    return args


def _fill_defaults(args: argparse.Namespace) -> None:
    """Unset flags: from --params (validated by pipelines.config) when given, else the fixed defaults."""
    defaults: dict = {
        "suite": "quick",
        "profile": Path("results/profile.csv"),
        "prepared_root": Path("data/prepared"),
        "out": Path("reports"),
        "expected_variants": [],
        "expected_seeds": [],
        "tracking_uri": None,
    }
    if args.params is not None:
        from pipelines.config import ParamsError, load_params
        from pipelines.tracking import default_tracking_uri as params_tracking_uri

        try:
            params = load_params(args.params)
        except ParamsError as error:
            raise SystemExit(f"report: {error}") from None
        suite = params.suite
        defaults.update(
            suite=suite.name,
            datasets=list(suite.datasets),
            profile=params.path(params.paths.results) / "profile.csv",
            prepared_root=params.path(params.paths.prepared),
            out=params.path(params.paths.reports),
            expected_variants=list(suite.variants),
            expected_seeds=[str(s) for s in suite.seeds],
            tracking_uri=params_tracking_uri(params.root, params.mlflow.tracking_uri),
        )
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.tracking_uri is None:
        args.tracking_uri = default_tracking_uri()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from pipelines.report.build import build_report  # heavy imports (mlflow, matplotlib) after parsing

    try:
        index = build_report(
            tracking_uri=args.tracking_uri,
            suite=args.suite,
            out=args.out,
            datasets=args.datasets,
            profile=args.profile,
            prepared_root=args.prepared_root,
            expected_variants=args.expected_variants,
            expected_seeds=args.expected_seeds,
            reference=args.reference,
            compare_paper=args.compare_paper,
            n_boot=args.n_boot,
            boot_seed=args.boot_seed,
            n_qualitative=args.n_qualitative,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    print(f"report written: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
