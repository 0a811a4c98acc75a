"""Safe extraction of tar and zip archives.

Every member is checked before anything is written: absolute paths, `..` components, links that
point outside the target and device files reject the whole archive. Extraction goes into a
temporary folder next to the target, renamed into place only when every member was read without
error, so a truncated or corrupt archive leaves nothing half-extracted behind.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

from pipelines.datasets.errors import CorruptArchiveError, UnsafeArchiveError

_TAR_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz")
_DRIVE = re.compile(r"^[A-Za-z]:")


def is_archive(path: Path) -> bool:
    """Whether `path` has a tar or zip file name."""
    name = path.name.lower()
    return name.endswith(".zip") or name.endswith(_TAR_SUFFIXES)


def _check_name(archive: Path, name: str) -> str:
    """Return the normalised member name, or raise if it is absolute or climbs out of the target."""
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise UnsafeArchiveError(
            f"{archive.name}: member {name!r} has an absolute path; refusing to extract this archive "
            "(it is malformed or malicious: delete it and fetch it again from a trusted source)"
        )
    normalised = posixpath.normpath(name.replace("\\", "/"))
    if normalised == ".." or normalised.startswith("../"):
        raise UnsafeArchiveError(
            f"{archive.name}: member {name!r} climbs out of the target folder (path traversal); refusing to "
            "extract this archive (delete it and fetch it again from a trusted source)"
        )
    return normalised


def _check_link(archive: Path, name: str, link: str, *, hard: bool) -> None:
    """Reject a link whose target is absolute or resolves outside the extraction folder."""
    kind = "hard link" if hard else "symlink"
    if link.startswith(("/", "\\")) or _DRIVE.match(link):
        raise UnsafeArchiveError(
            f"{archive.name}: {kind} {name!r} points to the absolute path {link!r}, outside the target; "
            "refusing to extract this archive (delete it and fetch it again from a trusted source)"
        )
    base = "" if hard else posixpath.dirname(name)  # hard links are relative to the archive root
    resolved = posixpath.normpath(posixpath.join(base, link.replace("\\", "/")))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(
            f"{archive.name}: {kind} {name!r} -> {link!r} points outside the target folder; refusing to "
            "extract this archive (delete it and fetch it again from a trusted source)"
        )


def _check_tar(archive: Path, tar: tarfile.TarFile) -> None:
    for member in tar.getmembers():
        name = _check_name(archive, member.name)
        if member.issym() or member.islnk():
            _check_link(archive, name, member.linkname, hard=member.islnk())
        elif not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(
                f"{archive.name}: member {member.name!r} is a device or fifo; "
                "refusing to extract this archive"
            )


def _check_zip(archive: Path, zf: zipfile.ZipFile) -> None:
    for info in zf.infolist():
        name = _check_name(archive, info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            _check_link(archive, name, zf.read(info).decode("utf-8", "replace"), hard=False)


def safe_extract(archive: Path, target: Path) -> Path:
    """Extract a tar or zip `archive` into the folder `target` (replaced if present), all or nothing.

    Raises:
        UnsafeArchiveError: a member is absolute, climbs out with `..`, or links outside the target.
        CorruptArchiveError: the archive is truncated, corrupt or not a tar/zip file.
    """
    archive, target = Path(archive), Path(target)
    if not is_archive(archive):
        raise CorruptArchiveError(
            f"{archive.name}: unknown archive format (expected one of .zip {' '.join(_TAR_SUFFIXES)})"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.extract-", dir=target.parent))
    try:
        try:
            if archive.name.lower().endswith(".zip"):
                with zipfile.ZipFile(archive) as zf:
                    _check_zip(archive, zf)
                    zf.extractall(tmp)
            else:
                with tarfile.open(archive) as tar:
                    _check_tar(archive, tar)
                    tar.extractall(tmp, filter="data")
        except tarfile.FilterError as e:  # second line of defence, after the checks above
            raise UnsafeArchiveError(f"{archive.name}: {e}; refusing to extract this archive") from None
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
            raise CorruptArchiveError(
                f"{archive.name} is truncated or corrupt ({type(e).__name__}: {e}); nothing was extracted. "
                f"Delete {archive} and fetch it again"
            ) from None
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
