"""Downloads: Range resume, checksum mismatch kept aside, 404, bounded retries, the lock file."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest
from conftest import sha256_file

from pipelines.datasets import ChecksumError, DownloadError, MissingRawDataError
from pipelines.datasets.download import Archive, ChecksumLock, download, parse_checksum
from pipelines.fetch import fetch_dataset
from pipelines.prepare import prepare_dataset

NAME = "ADEChallengeData2016.zip"  # the tests below borrow ade20k's spec, with overridden checksums


@pytest.fixture
def payload(file_server):
    data = os.urandom(300_000)
    (file_server.root / NAME).write_bytes(data)
    return data


def test_interrupted_download_resumes_with_range_and_ends_verified(
    tmp_path, file_server, payload, override_spec
):
    override_spec("ade20k", {NAME: "sha256:" + hashlib.sha256(payload).hexdigest()})
    file_server.drop_once.add(NAME)
    (path,) = fetch_dataset("ade20k", tmp_path / "raw", mirror=file_server.url, progress=False, backoff=0.01)
    assert path.read_bytes() == payload
    first, second = file_server.requests
    assert first == (NAME, None)
    assert second[1] == f"bytes={len(payload) // 2}-"  # resumed where the connection dropped
    assert not (path.parent / (NAME + ".part")).exists()
    lock = json.loads((path.parent / "checksums.lock.json").read_text())
    assert lock["files"][NAME] == {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}


def test_partial_file_from_an_earlier_run_is_resumed(tmp_path, file_server, payload, override_spec):
    override_spec("ade20k", {NAME: "md5:" + hashlib.md5(payload).hexdigest()})
    raw_dir = tmp_path / "raw" / "ade20k"
    raw_dir.mkdir(parents=True)
    (raw_dir / (NAME + ".part")).write_bytes(payload[:1000])
    (path,) = fetch_dataset("ade20k", tmp_path / "raw", mirror=file_server.url, progress=False)
    assert file_server.requests == [(NAME, "bytes=1000-")]
    assert path.read_bytes() == payload


def test_server_ignoring_range_restarts_from_zero(tmp_path, file_server, payload):
    file_server.honour_range = False
    part = tmp_path / "x.part"
    part.write_bytes(b"garbage that must not stay in front")
    download(f"{file_server.url}/{NAME}", part, progress=False)
    assert part.read_bytes() == payload


def test_checksum_mismatch_keeps_the_file_aside(tmp_path, file_server, payload, override_spec):
    wrong = hashlib.sha256(b"something else").hexdigest()
    override_spec("ade20k", {NAME: f"sha256:{wrong}"})
    with pytest.raises(ChecksumError) as info:
        fetch_dataset("ade20k", tmp_path / "raw", mirror=file_server.url, progress=False)
    actual = hashlib.sha256(payload).hexdigest()
    message = str(info.value)
    assert NAME in message and wrong in message and actual in message and ".corrupt" in message
    raw_dir = tmp_path / "raw" / "ade20k"
    assert (raw_dir / (NAME + ".corrupt")).read_bytes() == payload
    assert not (raw_dir / NAME).exists() and not (raw_dir / (NAME + ".part")).exists()
    # The bad file is never used: prepare refuses to run.
    with pytest.raises(MissingRawDataError, match="python -m pipelines.fetch ade20k"):
        prepare_dataset("ade20k", tmp_path / "raw", tmp_path / "prepared")
    assert not (tmp_path / "prepared" / "ade20k").exists()


def test_hand_placed_file_with_a_wrong_checksum_is_rejected(tmp_path, override_spec):
    override_spec("ade20k", {NAME: "sha1:" + hashlib.sha1(b"the real one").hexdigest()})
    raw_dir = tmp_path / "raw" / "ade20k"
    raw_dir.mkdir(parents=True)
    (raw_dir / NAME).write_bytes(b"not the real one")
    with pytest.raises(ChecksumError, match="sha1"):
        fetch_dataset("ade20k", tmp_path / "raw", progress=False)
    assert (raw_dir / (NAME + ".corrupt")).exists() and not (raw_dir / NAME).exists()


def test_404_is_an_immediate_error(tmp_path, file_server):
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        fetch_dataset("ade20k", tmp_path / "raw", mirror=file_server.url, progress=False, backoff=0.01)
    assert NAME in str(info.value)
    assert len(file_server.requests) == 1  # not retried
    assert not any((tmp_path / "raw" / "ade20k").glob(NAME + "*"))


def test_transient_errors_are_retried_a_bounded_number_of_times(
    tmp_path, file_server, payload, override_spec
):
    override_spec("ade20k", {NAME: "sha256:" + hashlib.sha256(payload).hexdigest()})
    file_server.fail[NAME] = 2
    start = time.monotonic()
    fetch_dataset("ade20k", tmp_path / "a", mirror=file_server.url, progress=False, retries=2, backoff=0.01)
    assert len(file_server.requests) == 3
    file_server.fail[NAME] = 100
    file_server.requests.clear()
    with pytest.raises(DownloadError, match="failed 3 times in a row"):
        fetch_dataset(
            "ade20k", tmp_path / "b", mirror=file_server.url, progress=False, retries=2, backoff=0.01
        )
    assert len(file_server.requests) == 3
    assert time.monotonic() - start < 5


def test_without_public_checksum_the_first_download_is_locked(tmp_path, file_server, payload, override_spec):
    override_spec("ade20k", {NAME: None})
    raw = tmp_path / "raw"
    (path,) = fetch_dataset("ade20k", raw, mirror=file_server.url, progress=False)
    lock = ChecksumLock(raw / "ade20k" / "checksums.lock.json")
    assert lock.get(NAME)["sha256"] == sha256_file(path)
    # Upstream changes the file: a later fetch must notice.
    path.unlink()
    (file_server.root / NAME).write_bytes(payload[::-1])
    with pytest.raises(ChecksumError, match="recorded at its first download"):
        fetch_dataset("ade20k", raw, mirror=file_server.url, progress=False)
    assert (raw / "ade20k" / (NAME + ".corrupt")).exists()


def test_missing_mirror_folder_and_file(tmp_path):
    with pytest.raises(DownloadError, match="neither a URL"):
        fetch_dataset("ade20k", tmp_path / "raw", mirror=str(tmp_path / "nope"), progress=False)
    (tmp_path / "mirror").mkdir()
    with pytest.raises(DownloadError, match="has no ADEChallengeData2016.zip"):
        fetch_dataset("ade20k", tmp_path / "raw", mirror=str(tmp_path / "mirror"), progress=False)


def test_checksum_strings_are_validated():
    assert parse_checksum("SHA1:" + "A" * 40) == ("sha1", "a" * 40)
    with pytest.raises(ValueError):
        parse_checksum("crc32:1234")
    with pytest.raises(ValueError):
        Archive("x.zip", "http://x/x.zip", checksum="md5:abc")
