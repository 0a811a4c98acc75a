"""Safe extraction: traversal, absolute paths, link escapes and truncated archives are rejected whole."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest
from dataset_archives import write_tar, write_zip

from pipelines.datasets import CorruptArchiveError, UnsafeArchiveError
from pipelines.datasets.extract import safe_extract


def _tar_with(path, members):
    """members: list of (TarInfo-kwargs, data or None)."""
    with tarfile.open(path, "w") as tar:
        for fields, data in members:
            info = tarfile.TarInfo(fields.pop("name"))
            for key, value in fields.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


GOOD = ({"name": "ok/first.txt"}, b"written first")


@pytest.mark.parametrize(
    "members, problem",
    [
        ([GOOD, ({"name": "../evil.txt"}, b"x")], "path traversal"),
        ([GOOD, ({"name": "ok/../../evil.txt"}, b"x")], "path traversal"),
        ([GOOD, ({"name": "/tmp/evil-absolute.txt"}, b"x")], "absolute path"),
        (
            [GOOD, ({"name": "ok/link", "type": tarfile.SYMTYPE, "linkname": "../../outside"}, None)],
            "outside",
        ),
        ([GOOD, ({"name": "ok/abs", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, None)], "absolute"),
        (
            [GOOD, ({"name": "ok/hard", "type": tarfile.LNKTYPE, "linkname": "../outside.txt"}, None)],
            "outside",
        ),
        ([GOOD, ({"name": "ok/dev", "type": tarfile.CHRTYPE}, None)], "device"),
    ],
)
def test_malicious_tar_is_rejected_before_anything_is_written(tmp_path, tree_of, members, problem):
    archive = _tar_with(tmp_path / "bad.tar", [(dict(f), d) for f, d in members])
    before = tree_of(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=problem) as info:
        safe_extract(archive, tmp_path / "work" / "out")
    assert "bad.tar" in str(info.value)
    assert tree_of(tmp_path) - before <= {"work"}  # at most the (empty) parent folder
    assert not any((tmp_path / "work").iterdir())


def test_symlink_then_write_through_it_is_rejected(tmp_path, tree_of):
    archive = _tar_with(
        tmp_path / "escape.tar",
        [({"name": "a", "type": tarfile.SYMTYPE, "linkname": ".."}, None), ({"name": "a/escaped.txt"}, b"x")],
    )
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, tmp_path / "work" / "out")
    assert not (tmp_path / "work" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()


def test_links_inside_the_target_are_fine(tmp_path):
    archive = _tar_with(
        tmp_path / "fine.tar",
        [GOOD, ({"name": "ok/link", "type": tarfile.SYMTYPE, "linkname": "first.txt"}, None)],
    )
    out = safe_extract(archive, tmp_path / "out")
    assert (out / "ok" / "link").read_bytes() == b"written first"


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
def test_malicious_zip_is_rejected(tmp_path, tree_of, name):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/first.txt", b"x")
        zf.writestr(zipfile.ZipInfo(name), b"evil")
    before = tree_of(tmp_path)
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, tmp_path / "work" / "out")
    assert tree_of(tmp_path) - before <= {"work"}


def test_zip_symlink_escape_is_rejected(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("ADEChallengeData2016/link")
        info.external_attr = (0o120777 << 16) | 0x20  # a symlink, as `zip --symlinks` stores it
        zf.writestr(info, "../../../etc")
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["tar", "tgz", "zip"])
def test_truncated_archive_leaves_nothing_half_extracted(tmp_path, kind):
    files = {f"data/file{i}.bin": bytes([i]) * 20_000 for i in range(5)}
    if kind == "zip":
        archive = write_zip(tmp_path / "a.zip", files)
    else:
        archive = write_tar(tmp_path / f"a.{kind}", files, mode="w:gz" if kind == "tgz" else "w")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) * 2 // 3])
    (tmp_path / "work").mkdir()
    with pytest.raises(CorruptArchiveError, match="truncated or corrupt"):
        safe_extract(archive, tmp_path / "work" / "out")
    assert list((tmp_path / "work").iterdir()) == []


def test_unknown_format_and_replacement_of_an_old_target(tmp_path):
    (tmp_path / "a.rar").write_bytes(b"Rar!")
    with pytest.raises(CorruptArchiveError, match="unknown archive format"):
        safe_extract(tmp_path / "a.rar", tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.txt").write_text("old")
    safe_extract(write_zip(tmp_path / "b.zip", {"new.txt": b"new"}), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["new.txt"]
