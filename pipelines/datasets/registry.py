"""The registry of datasets: name -> what to download and how to convert it (paper.md, section 4).

A dataset module defines a `DatasetSpec` and calls `register_dataset(spec)` at import; adding a
dataset means adding its module name to `BUILTIN_MODULES`.
"""

from __future__ import annotations

import importlib
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipelines.datasets.download import Archive
from pipelines.datasets.errors import UnknownDatasetError
from pipelines.datasets.layout import LayoutWriter

# Dataset modules under pipelines/datasets/ that register themselves on import.
BUILTIN_MODULES: tuple[str, ...] = (
    "synthetic",
    "voc",
    "ade20k",
    "cityscapes",
    "pascal_context",
    "person_part",
    "nyudv2",
    "sunrgbd",
    "camvid",
)

#: convert(inputs, writer, **options): `inputs` maps each archive's file name to its extracted
#: folder (or to the file itself when `Archive.extract` is False); the converter calls `writer.add`.
Converter = Callable[..., None]


@dataclass(frozen=True)
class DatasetSpec:
    """How to fetch and prepare one dataset.

    Args:
        name: the dataset name used on the command line and in `data/raw/<name>`, `data/prepared/<name>`.
        classes: class names in label-id order.
        palette: one [r, g, b] per class.
        convert: the converter (see `Converter`); its keyword-only parameters are the prepare options.
        converter_version: bump when the converter's output changes (recorded in meta.json).
        archives: the raw files `fetch` downloads.
        login: returns a logged-in URL opener for the official host (datasets behind a login); it raises
            CredentialsError with instructions when no credentials are configured.
        generate: for datasets made on the fly (no archives): called by `fetch` with the raw folder.
        expected_splits: split sizes of the full dataset (paper.md, section 4), to flag partial data.
    """

    name: str
    classes: Sequence[str]
    palette: Sequence[Sequence[int]]
    convert: Converter
    converter_version: int
    archives: tuple[Archive, ...] = ()
    login: Callable[[], urllib.request.OpenerDirector] | None = None
    generate: Callable[[Path], None] | None = None
    expected_splits: Mapping[str, int] | None = None

    @property
    def needs_login(self) -> bool:
        return self.login is not None


_DATASETS: dict[str, DatasetSpec] = {}
_loaded = False


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset to the registry; a duplicate name is an error."""
    if spec.name in _DATASETS and _DATASETS[spec.name] is not spec:
        raise ValueError(f"a dataset named {spec.name!r} is already registered")
    if len(spec.palette) != len(spec.classes):
        raise ValueError(f"{spec.name}: {len(spec.palette)} palette colours for {len(spec.classes)} classes")
    _DATASETS[spec.name] = spec
    return spec


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for module in BUILTIN_MODULES:
            importlib.import_module(f"pipelines.datasets.{module}")
        _loaded = True


def list_datasets() -> list[str]:
    """Names of every registered dataset."""
    _load_builtins()
    return sorted(_DATASETS)


def get_spec(name: str) -> DatasetSpec:
    """The spec of dataset `name`; an unknown name is an error listing the valid ones."""
    _load_builtins()
    if name not in _DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; valid datasets: {', '.join(sorted(_DATASETS))}")
    return _DATASETS[name]


def new_writer(spec: DatasetSpec, target: Path) -> LayoutWriter:
    """A LayoutWriter for `spec` writing to `target`."""
    return LayoutWriter(target, name=spec.name, classes=spec.classes, palette=spec.palette)
