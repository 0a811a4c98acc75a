"""Cityscapes: credentials, hand-placed archives, the site's login form, labelIds -> trainIds."""

from __future__ import annotations

import shutil
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from conftest import sha256_file
from dataset_archives import CITY_EXPECTED, build_cityscapes

from pipelines.datasets import CredentialsError, cityscapes, list_split, load_meta, read_label
from pipelines.datasets.registry import get_spec
from pipelines.fetch import fetch_dataset, main
from pipelines.prepare import prepare_dataset

GT, LEFT = "gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip"


@pytest.fixture
def no_credentials(monkeypatch):
    monkeypatch.delenv(cityscapes.ENV_USERNAME, raising=False)
    monkeypatch.delenv(cityscapes.ENV_PASSWORD, raising=False)


@pytest.fixture
def archives(tmp_path, override_spec):
    folder = tmp_path / "built"
    images = build_cityscapes(folder)
    override_spec("cityscapes", {n: "sha256:" + sha256_file(folder / n) for n in (GT, LEFT)})
    return folder, images


def test_registry_keeps_the_official_packages():
    spec = get_spec("cityscapes")
    urls = {a.filename: a.url for a in spec.archives}
    assert urls == {
        GT: "https://www.cityscapes-dataset.com/file-handling/?packageID=1",
        LEFT: "https://www.cityscapes-dataset.com/file-handling/?packageID=3",
    }
    assert spec.needs_login and len(spec.classes) == 19 and spec.classes[18] == "bicycle"
    assert spec.palette[0] == (128, 64, 128)


def test_without_credentials_or_archives_the_error_says_what_to_do(tmp_path, no_credentials, capsys):
    with pytest.raises(CredentialsError) as info:
        fetch_dataset("cityscapes", tmp_path / "raw", progress=False)
    message = str(info.value)
    for needed in ("CITYSCAPES_USERNAME", "CITYSCAPES_PASSWORD", "data/raw/cityscapes", GT, LEFT, "--mirror"):
        assert needed in message
    # The CLI turns it into one line on stderr and exit code 2, without a traceback.
    assert main(["cityscapes", "--raw-root", str(tmp_path / "raw"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_hand_placed_archives_need_no_login(tmp_path, archives, no_credentials):
    folder, images = archives
    raw = tmp_path / "data" / "raw"
    (raw / "cityscapes").mkdir(parents=True)
    for name in (GT, LEFT):
        shutil.copy(folder / name, raw / "cityscapes" / name)
    fetch_dataset("cityscapes", raw, progress=False)  # verifies them, downloads nothing
    root = prepare_dataset("cityscapes", raw, tmp_path / "data" / "prepared")

    meta = load_meta(root)
    assert meta["splits"] == {"train": 2, "val": 1}  # the test split is not converted
    for split in ("train", "val"):
        for sample in list_split(root, split):
            expected = np.array(CITY_EXPECTED[(split, sample.image_id)], dtype=np.uint8)
            np.testing.assert_array_equal(read_label(sample.label), expected)
            assert (
                sample.image.suffix == ".png"
                and sample.image.read_bytes() == images[(split, sample.image_id)]
            )


def test_label_ids_to_train_ids_lookup():
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
    for label_id in range(256):
        assert cityscapes.LUT[label_id] == expected.get(label_id, 255), label_id


class FakeCityscapesSite(BaseHTTPRequestHandler):
    """The login form (302 on success, with a session cookie) and file-handling downloads behind it."""

    protocol_version = "HTTP/1.1"

    def _send(self, code, body=b"", headers=()):
        self.send_response(code)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        url = urllib.parse.urlparse(self.path)
        if url.path == "/login/":
            self._send(200, b"<form>", [("Set-Cookie", "csrftoken=t; Path=/")])
        elif url.path == "/file-handling/":
            if "session=ok" not in (self.headers.get("Cookie") or ""):
                self._send(302, headers=[("Location", "/login/")])
                return
            package = urllib.parse.parse_qs(url.query)["packageID"][0]
            self._send(200, self.server.packages[package])
        else:
            self._send(404)

    def do_POST(self):  # noqa: N802
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        self.server.forms.append(form)
        if form == {"username": ["ann"], "password": ["s3cret"], "submit": ["Login"]}:
            self._send(302, headers=[("Location", "/"), ("Set-Cookie", "session=ok; Path=/")])
        else:
            self._send(200, b"The password you entered is incorrect")

    def log_message(self, format, *args):
        pass


@pytest.fixture
def fake_site(archives, override_spec, monkeypatch):
    folder, _ = archives
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeCityscapesSite)
    server.packages = {"1": (folder / GT).read_bytes(), "3": (folder / LEFT).read_bytes()}
    server.forms = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(cityscapes, "LOGIN_URL", f"{base}/login/")
    override_spec(
        "cityscapes",
        {n: "sha256:" + sha256_file(folder / n) for n in (GT, LEFT)},
        urls={GT: f"{base}/file-handling/?packageID=1", LEFT: f"{base}/file-handling/?packageID=3"},
    )
    yield server
    server.shutdown()
    server.server_close()


def test_login_with_credentials_from_the_environment(tmp_path, fake_site, monkeypatch):
    monkeypatch.setenv("CITYSCAPES_USERNAME", "ann")
    monkeypatch.setenv("CITYSCAPES_PASSWORD", "s3cret")
    paths = fetch_dataset("cityscapes", tmp_path / "raw", progress=False)
    assert [p.name for p in paths] == [GT, LEFT]
    assert len(fake_site.forms) == 1  # one login for both packages
    # The credentials are not stored anywhere under the raw folder.
    for path in (tmp_path / "raw").rglob("*"):
        if path.is_file():
            assert b"s3cret" not in path.read_bytes()


def test_wrong_password_is_a_clear_error_without_the_password(tmp_path, fake_site, monkeypatch):
    monkeypatch.setenv("CITYSCAPES_USERNAME", "ann")
    monkeypatch.setenv("CITYSCAPES_PASSWORD", "wrong-pw")
    with pytest.raises(CredentialsError) as info:
        fetch_dataset("cityscapes", tmp_path / "raw", progress=False)
    assert "rejected" in str(info.value) and "wrong-pw" not in str(info.value)
    assert not (tmp_path / "raw" / "cityscapes" / GT).exists()
