"""Datasets of the suite: download, safe extraction, the prepared layout and one converter per dataset.

The stage entry points are `pipelines.fetch.fetch_dataset` and `pipelines.prepare.prepare_dataset`;
the engine reads prepared data with `load_meta` and `list_split`.
"""

from pipelines.datasets.errors import (
    ChecksumError,
    CorruptArchiveError,
    CredentialsError,
    DatasetError,
    DownloadError,
    LayoutError,
    MissingRawDataError,
    UnknownDatasetError,
    UnsafeArchiveError,
)
from pipelines.datasets.layout import IGNORE_INDEX, Sample, list_split, load_meta, read_label
from pipelines.datasets.registry import DatasetSpec, get_spec, list_datasets, register_dataset

__all__ = [
    "IGNORE_INDEX",
    "ChecksumError",
    "CorruptArchiveError",
    "CredentialsError",
    "DatasetError",
    "DatasetSpec",
    "DownloadError",
    "LayoutError",
    "MissingRawDataError",
    "Sample",
    "UnknownDatasetError",
    "UnsafeArchiveError",
    "get_spec",
    "list_datasets",
    "list_split",
    "load_meta",
    "read_label",
    "register_dataset",
]
