"""The `fetch` stage: download every raw file of one dataset into `data/raw/<dataset>/`.

    python -m pipelines.fetch <dataset> [--mirror URL_OR_DIR] [--raw-root data/raw] [--params params.yaml]

Downloads are checksum-verified and resumable; archives already present and verified are reused.
`--mirror` (default: the environment variable REFINENET_DATA_MIRROR) replaces the official hosts by
a base URL or a local folder (file names are appended). With `--params`, the raw folder comes from
`paths.raw` of params.yaml unless `--raw-root` is given.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

from pipelines.datasets.download import LOCK_NAME, ChecksumLock, fetch_archive
from pipelines.datasets.errors import DatasetError, DownloadError
from pipelines.datasets.registry import get_spec, list_datasets


def fetch_dataset(
    name: str,
    raw_root: Path | str = "data/raw",
    mirror: str | None = None,
    *,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> list[Path]:
    """Make every raw file of dataset `name` present and verified under `raw_root/name`.

    Args:
        name: a registered dataset (`pipelines.datasets.list_datasets()`).
        raw_root: the folder holding one sub-folder per dataset.
        mirror: a base URL or a local folder replacing the official hosts; None for the official URLs.
        retries, backoff, timeout: transient failures in a row allowed per file, the base of the
            exponential backoff in seconds, and the socket timeout in seconds.
        progress: show a progress bar per download.

    Returns:
        The paths of the verified raw files (none for generated datasets).
    """
    spec = get_spec(name)
    raw_dir = Path(raw_root) / name
    if mirror is not None and "://" not in mirror and not Path(mirror).expanduser().is_dir():
        raise DownloadError(
            f"mirror {mirror!r} is neither a URL (with ://) nor an existing folder; fix --mirror"
        )
    raw_dir.mkdir(parents=True, exist_ok=True)
    if spec.generate is not None:
        spec.generate(raw_dir)
    lock = ChecksumLock(raw_dir / LOCK_NAME)
    opener_factory = functools.cache(spec.login) if spec.login is not None else None
    return [
        fetch_archive(
            archive,
            raw_dir,
            lock=lock,
            mirror=mirror,
            dataset=name,
            opener_factory=opener_factory,
            retries=retries,
            backoff=backoff,
            timeout=timeout,
            progress=progress,
        )
        for archive in spec.archives
    ]


MIRROR_ENV = "REFINENET_DATA_MIRROR"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; a DatasetError (or a bad params file) becomes a one-line message and exit code 2."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.fetch", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help=f"one of: {', '.join(list_datasets())}")
    parser.add_argument(
        "--mirror",
        default=os.environ.get(MIRROR_ENV) or None,
        help=f"base URL or local folder replacing the official hosts (default: ${MIRROR_ENV})",
    )
    parser.add_argument("--raw-root", default=None, type=Path, help="where raw files go (default data/raw)")
    parser.add_argument("--params", default=None, type=Path, help="params.yaml to take paths.raw from")
    parser.add_argument("--retries", type=int, default=5, help="transient failures in a row allowed per file")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    try:
        if args.raw_root is None:
            args.raw_root = Path("data/raw")
            if args.params is not None:
                from pipelines.config import load_params

                params = load_params(args.params)
                args.raw_root = params.path(params.paths.raw)
        paths = fetch_dataset(
            args.dataset, args.raw_root, args.mirror, retries=args.retries, progress=not args.no_progress
        )
    except (DatasetError, ValueError) as e:  # config.ParamsError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: partial downloads are kept as *.part and resume on the next fetch", file=sys.stderr
        )
        return 130
    where = args.raw_root / args.dataset
    if get_spec(args.dataset).generate is not None and not paths:
        print(f"{args.dataset}: nothing to download (`python -m pipelines.prepare {args.dataset}` makes it)")
    else:
        print(f"{args.dataset}: {len(paths)} raw file(s) verified in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
