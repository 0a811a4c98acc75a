"""The two stage CLIs end to end, and bad archives going through fetch + prepare."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import sha256_file
from dataset_archives import build_ade20k, write_zip

from pipelines import fetch, prepare
from pipelines.datasets import CorruptArchiveError, MissingRawDataError, UnsafeArchiveError, load_meta
from pipelines.fetch import fetch_dataset
from pipelines.prepare import prepare_dataset

REPO = Path(__file__).resolve().parents[3]


def test_cli_synthetic_end_to_end(tmp_path, capsys):
    raw, out = str(tmp_path / "data" / "raw"), str(tmp_path / "data" / "prepared")
    assert fetch.main(["synthetic", "--raw-root", raw]) == 0
    assert prepare.main(["synthetic", "--raw-root", raw, "--out-root", out, "--set", "n_train=3",
                         "--set", "n_val=2", "--set", "size=40", "--set", "seed=5"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "nothing to download" in printed and "{'train': 3, 'val': 2}" in printed
    meta = load_meta(tmp_path / "data" / "prepared" / "synthetic")
    assert meta["options"] == {"seed": 5, "n_train": 3, "n_val": 2, "size": 40}


def test_cli_errors_are_one_line_and_exit_code_2(tmp_path, capsys):
    assert (
        prepare.main(["synthetic", "--raw-root", str(tmp_path), "--out-root", str(tmp_path), "--set", "x"])
        == 2
    )
    assert prepare.main(["ade20k", "--raw-root", str(tmp_path), "--out-root", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("error: --set 'x': expected KEY=VALUE")
    assert (
        lines[1].startswith("error: ade20k: raw file(s)") and "python -m pipelines.fetch ade20k" in lines[1]
    )
    # Through the interpreter: no traceback, the valid names listed.
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.fetch", "no_such_dataset", "--raw-root", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "valid datasets: ade20k, camvid, cityscapes, nyudv2, pascal_context" in result.stderr


def test_cli_fetch_with_a_mirror_url(tmp_path, file_server, override_spec, capsys):
    build_ade20k(file_server.root)
    archive = file_server.root / "ADEChallengeData2016.zip"
    override_spec("ade20k", {archive.name: "sha256:" + sha256_file(archive)})
    raw = tmp_path / "data" / "raw"
    assert fetch.main(["ade20k", "--mirror", file_server.url, "--raw-root", str(raw), "--no-progress"]) == 0
    assert sha256_file(raw / "ade20k" / archive.name) == sha256_file(archive)
    assert "1 raw file(s) verified" in capsys.readouterr().out


def _served_without_checksum(file_server, override_spec, dataset, files):
    """Serve `files` ({name: bytes}) and make `dataset`'s archives checksum-free (lock on first fetch)."""
    for name, data in files.items():
        (file_server.root / name).write_bytes(data)
    override_spec(dataset, dict.fromkeys(files))


def _only_under_data(tmp_path, tree_of):
    written = {p for p in tree_of(tmp_path) if not p.startswith("served")}
    return all(p == "data" or p.startswith("data/") for p in written)


def test_path_traversal_archive_is_rejected_by_prepare(tmp_path, file_server, override_spec, tree_of):
    bad = tmp_path / "bad.zip"
    write_zip(bad, {"ADEChallengeData2016/images/training/a.jpg": b"x"})
    with __import__("zipfile").ZipFile(bad, "a") as zf:
        zf.writestr("../../../../escaped.txt", b"evil")
    _served_without_checksum(
        file_server, override_spec, "ade20k", {"ADEChallengeData2016.zip": bad.read_bytes()}
    )
    bad.unlink()
    data = tmp_path / "data"
    fetch_dataset("ade20k", data / "raw", mirror=file_server.url, progress=False)
    with pytest.raises(UnsafeArchiveError, match="path traversal"):
        prepare_dataset("ade20k", data / "raw", data / "prepared")
    assert _only_under_data(tmp_path, tree_of)
    assert list((data / "prepared").iterdir()) == []
    assert not any(p.name == "escaped.txt" for p in tmp_path.parent.rglob("escaped.txt"))


def test_symlink_escape_is_rejected_by_prepare(tmp_path, file_server, override_spec, tree_of):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("VOCdevkit/VOC2012/JPEGImages")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../../../outside"
        tar.addfile(link)
        payload = tarfile.TarInfo("VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg")
        payload.size = 4
        tar.addfile(payload, io.BytesIO(b"evil"))
    _served_without_checksum(
        file_server, override_spec, "voc2012",
        {"VOCtrainval_11-May-2012.tar": buffer.getvalue(), "benchmark.tgz": buffer.getvalue()},
    )  # fmt: skip
    data = tmp_path / "data"
    fetch_dataset("voc2012", data / "raw", mirror=file_server.url, progress=False)
    with pytest.raises(UnsafeArchiveError, match="symlink 'VOCdevkit/VOC2012/JPEGImages'"):
        prepare_dataset("voc2012", data / "raw", data / "prepared")
    assert _only_under_data(tmp_path, tree_of)
    assert list((data / "prepared").iterdir()) == []


def test_truncated_archive_is_rejected_by_prepare(tmp_path, file_server, override_spec, tree_of):
    build_ade20k(tmp_path / "built")
    whole = (tmp_path / "built" / "ADEChallengeData2016.zip").read_bytes()
    _served_without_checksum(file_server, override_spec, "ade20k", {"ADEChallengeData2016.zip": whole[:-200]})
    data = tmp_path / "data"
    fetch_dataset("ade20k", data / "raw", mirror=file_server.url, progress=False)
    with pytest.raises(CorruptArchiveError, match="truncated or corrupt.*fetch it again"):
        prepare_dataset("ade20k", data / "raw", data / "prepared")
    assert list((data / "prepared").iterdir()) == []


def test_raw_file_changed_after_fetch_is_noticed(tmp_path, file_server, override_spec):
    build_ade20k(file_server.root)
    archive = file_server.root / "ADEChallengeData2016.zip"
    override_spec("ade20k", {archive.name: "sha256:" + sha256_file(archive)})
    raw = tmp_path / "raw"
    (path,) = fetch_dataset("ade20k", raw, mirror=file_server.url, progress=False)
    with open(path, "ab") as f:
        f.write(b"appended")
    with pytest.raises(MissingRawDataError, match="changed since it was fetched"):
        prepare_dataset("ade20k", raw, tmp_path / "prepared")


@pytest.mark.skipif(not (REPO / "params.yaml").is_file(), reason="no params.yaml in the repository")
def test_cli_reads_paths_and_options_from_params(tmp_path, capsys):
    """The DVC stages call `python -m pipelines.{fetch,prepare} <ds> --params params.yaml`."""
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    assert fetch.main(["synthetic", "--params", str(params)]) == 0
    assert (tmp_path / "data" / "raw" / "synthetic" / "generator.json").is_file()
    small = ["--set", "n_train=2", "--set", "n_val=1", "--set", "size=32"]
    assert prepare.main(["synthetic", "--params", str(params), *small]) == 0
    assert load_meta(tmp_path / "data" / "prepared" / "synthetic")["splits"] == {"train": 2, "val": 1}
    params.write_text("suite: [not, a, mapping]\n")
    assert prepare.main(["synthetic", "--params", str(params)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_mirror_from_the_environment(tmp_path, file_server, override_spec, monkeypatch):
    build_ade20k(file_server.root)
    archive = file_server.root / "ADEChallengeData2016.zip"
    override_spec("ade20k", {archive.name: "sha256:" + sha256_file(archive)})
    monkeypatch.setenv(fetch.MIRROR_ENV, file_server.url)
    assert fetch.main(["ade20k", "--raw-root", str(tmp_path / "raw"), "--no-progress"]) == 0
    assert file_server.requests == [(archive.name, None)]
