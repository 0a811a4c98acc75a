"""Errors of the data stages: each message names the problem and the fix."""

from __future__ import annotations


class DatasetError(Exception):
    """Base class of every error the fetch and prepare stages raise on bad input."""


class UnknownDatasetError(DatasetError, KeyError):
    """A dataset name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DownloadError(DatasetError):
    """A download failed (HTTP error, connection lost too often, missing mirror file)."""


class ChecksumError(DatasetError):
    """A file's digest differs from the expected one; the file was moved aside."""

    def __init__(self, message: str, *, expected: str, actual: str, kept_at: str | None = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual
        self.kept_at = kept_at


class CredentialsError(DatasetError):
    """A dataset needs a login and neither credentials nor hand-placed archives were found."""


class UnsafeArchiveError(DatasetError):
    """An archive member would land outside the target (path traversal, absolute path, link)."""


class CorruptArchiveError(DatasetError):
    """An archive is truncated, corrupt or of an unknown format."""


class MissingRawDataError(DatasetError):
    """Prepare was asked for a dataset whose raw archives are not (all) there."""


class LayoutError(DatasetError):
    """A prepared dataset folder is missing or does not follow the layout contract."""
