"""Checksum-verified, resumable downloads of raw dataset archives (the `fetch` stage of design.md).

A download goes to `<file>.part`, resumes with an HTTP `Range` request after a dropped connection,
retries transient failures with exponential backoff, and is renamed to its final name only once its
digest matches. A file whose digest does not match is moved aside to `<file>.corrupt` and never used.
Where no public checksum is known, the first verified download records its sha256 in
`checksums.lock.json` next to the archives, and later fetches must match it.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipelines.datasets.errors import ChecksumError, DownloadError

LOCK_NAME = "checksums.lock.json"
USER_AGENT = "refinenet-repro-fetch/1.0 (+https://github.com/)"
_ALGORITHMS = ("md5", "sha1", "sha256")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One raw file of a dataset.

    Args:
        filename: name under `data/raw/<dataset>/` (and under a mirror).
        url: the official download URL.
        checksum: `"<algorithm>:<hex digest>"` with algorithm md5, sha1 or sha256, or None when no
            public digest is known (then the first verified download is recorded in the lock file).
        extract: whether `prepare` unpacks it (tar/zip) or hands the file itself to the converter.
    """

    filename: str
    url: str
    checksum: str | None = None
    extract: bool = True

    def __post_init__(self) -> None:
        if self.checksum is not None:
            parse_checksum(self.checksum)
        if "/" in self.filename or self.filename in ("", ".", ".."):
            raise ValueError(f"Archive filename must be a plain file name, got {self.filename!r}")


def parse_checksum(checksum: str) -> tuple[str, str]:
    """Split `"sha256:abc..."` into `("sha256", "abc...")`, checking the algorithm and the length."""
    algorithm, _, digest = checksum.partition(":")
    algorithm, digest = algorithm.lower(), digest.lower()
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"checksum {checksum!r}: algorithm must be one of {_ALGORITHMS}")
    if len(digest) != hashlib.new(algorithm).digest_size * 2 or any(
        c not in "0123456789abcdef" for c in digest
    ):
        raise ValueError(f"checksum {checksum!r}: not a hex {algorithm} digest")
    return algorithm, digest


def file_digests(path: Path, algorithms: Iterable[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file for several algorithms, read in one pass."""
    hashers = {a: hashlib.new(a) for a in dict.fromkeys(algorithms)}
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


class ChecksumLock:
    """The lock file `data/raw/<dataset>/checksums.lock.json`: sha256 and size of every verified file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.files: dict[str, dict[str, object]] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                self.files = dict(data["files"])
            except (ValueError, KeyError, TypeError) as e:
                raise DownloadError(
                    f"lock file {self.path} is not valid JSON with a 'files' mapping ({e}); "
                    "fix it or delete it (the archives' digests are then recorded again)"
                ) from e

    def get(self, filename: str) -> dict[str, object] | None:
        return self.files.get(filename)

    def record(self, filename: str, sha256: str, size: int) -> None:
        """Record a verified file and write the lock file atomically."""
        self.files[filename] = {"sha256": sha256, "size": size}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"version": 1, "files": dict(sorted(self.files.items()))}, indent=2) + "\n")
        os.replace(tmp, self.path)


def sha256_of(path: Path, lock: ChecksumLock | None = None) -> str:
    """The sha256 of a raw file, from the lock file when its recorded size matches, else computed."""
    entry = lock.get(path.name) if lock is not None else None
    if entry is not None and entry.get("size") == path.stat().st_size:
        return str(entry["sha256"])
    return file_digests(path)["sha256"]


def verify_file(path: Path, *, name: str, checksum: str | None, lock: ChecksumLock) -> str:
    """Check `path` against the public checksum, or the lock file's digest when there is none.

    On success the lock records the file's sha256 (returned). On a mismatch the file is moved to
    `<dest name>.corrupt` and a ChecksumError names the file and both digests.
    """
    algorithms = ["sha256"]
    expected_algo = expected = None
    source = ""
    if checksum is not None:
        expected_algo, expected = parse_checksum(checksum)
        source = "the published checksum"
    elif (entry := lock.get(name)) is not None:
        expected_algo, expected = "sha256", str(entry["sha256"])
        source = f"the digest recorded at its first download in {lock.path}"
    if expected_algo is not None:
        algorithms.append(expected_algo)
    digests = file_digests(path, algorithms)
    if expected_algo is not None and digests[expected_algo] != expected:
        corrupt = lock.path.parent / f"{name}.corrupt"
        os.replace(path, corrupt)
        fix = (
            "delete it and fetch again (or check the mirror's copy)"
            if checksum is not None
            else f"if the upstream file changed on purpose, delete its entry in {lock.path} and fetch again"
        )
        raise ChecksumError(
            f"checksum mismatch for {name}: expected {expected_algo} {expected}, "
            f"got {digests[expected_algo]} "
            f"(from {source}). The bad file was kept aside, unused, at {corrupt}; {fix}.",
            expected=expected,
            actual=digests[expected_algo],
            kept_at=str(corrupt),
        )
    lock.record(name, digests["sha256"], path.stat().st_size)
    return digests["sha256"]


def _retryable_http(code: int) -> bool:
    return code in (408, 425, 429) or code >= 500


def download(
    url: str,
    part: Path,
    *,
    opener: urllib.request.OpenerDirector | None = None,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download `url` into `part`, resuming from its current size with an HTTP Range request.

    Transient failures (connection lost, timeouts, HTTP 5xx/429) are retried up to `retries` times in
    a row with a sleep of `backoff * 2**k` seconds; an attempt that got further than any before resets
    the count.
    Permanent HTTP errors (404, 403, ...) raise DownloadError at once.
    """
    opener = opener or urllib.request.build_opener()
    part.parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    furthest = part.stat().st_size if part.exists() else 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            with opener.open(request, timeout=timeout) as response:
                status = response.status
                if offset and status == 206:
                    content_range = response.headers.get("Content-Range", "")
                    if not content_range.startswith(f"bytes {offset}-"):
                        raise DownloadError(
                            f"{url} answered a resume request with Content-Range {content_range!r}, not "
                            f"starting at byte {offset}; delete {part} and fetch again"
                        )
                    mode = "ab"
                else:  # 200: the server ignored Range (or nothing to resume): start over
                    offset, mode = 0, "wb"
                length = response.headers.get("Content-Length")
                total = offset + int(length) if length is not None else None
                with (
                    open(part, mode) as f,
                    tqdm(
                        total=total,
                        initial=offset,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=part.name.removesuffix(".part"),
                        disable=not progress,
                    ) as bar,
                ):
                    while chunk := response.read(_CHUNK):
                        f.write(chunk)
                        bar.update(len(chunk))
                if total is not None and part.stat().st_size < total:
                    raise http.client.IncompleteRead(b"", total - part.stat().st_size)
                return part
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:
                # Range not satisfiable: the partial file is already complete (or longer than the file).
                size = e.headers.get("Content-Range", "").rpartition("/")[2] if e.headers else ""
                if size.isdigit() and int(size) == offset:
                    return part
                part.unlink()
                problem: str = "HTTP 416 on resume"
            elif not _retryable_http(e.code):
                raise DownloadError(
                    f"HTTP {e.code} ({e.reason}) for {url}. Check the URL or the mirror "
                    f"(--mirror), or place the file by hand at {part.with_suffix('')}"
                ) from None
            else:
                problem = f"HTTP {e.code}"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            problem = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        size = part.stat().st_size if part.exists() else 0
        failures = 0 if size > furthest else failures + 1
        furthest = max(furthest, size)
        if failures > retries:
            raise DownloadError(
                f"download of {url} failed {failures} times in a row (last: {problem}); the partial file "
                f"{part} is kept and the next fetch resumes it. Check the network, or use --mirror"
            )
        if failures:
            time.sleep(backoff * 2 ** (failures - 1))


def fetch_archive(
    archive: Archive,
    raw_dir: Path,
    *,
    lock: ChecksumLock,
    mirror: str | None = None,
    dataset: str = "",
    opener_factory: Callable[[], urllib.request.OpenerDirector] | None = None,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Make `raw_dir/<archive.filename>` present and verified; return its path.

    An existing verified file is reused. Otherwise it comes from `mirror` (a base URL, or a local
    directory holding `<filename>` or `<dataset>/<filename>`) or from the official URL, through the
    opener that `opener_factory()` returns (a logged-in session for Cityscapes) when given.
    """
    dest = raw_dir / archive.filename
    if dest.exists():
        verify_file(dest, name=archive.filename, checksum=archive.checksum, lock=lock)
        return dest
    part = raw_dir / (archive.filename + ".part")
    raw_dir.mkdir(parents=True, exist_ok=True)
    if mirror is not None and "://" not in mirror:
        root = Path(mirror).expanduser()
        candidates = [root / archive.filename, root / dataset / archive.filename]
        source = next((c for c in candidates if c.is_file()), None)
        if source is None:
            raise DownloadError(
                f"mirror directory {root} has no {archive.filename} (looked for "
                f"{', '.join(str(c) for c in candidates)}); copy it there or drop --mirror"
            )
        shutil.copyfile(source, part)
    else:
        url = archive.url if mirror is None else mirror.rstrip("/") + "/" + archive.filename
        opener = opener_factory() if (mirror is None and opener_factory is not None) else None
        download(
            url, part, opener=opener, retries=retries, backoff=backoff, timeout=timeout, progress=progress
        )
    verify_file(part, name=archive.filename, checksum=archive.checksum, lock=lock)
    os.replace(part, dest)
    return dest
