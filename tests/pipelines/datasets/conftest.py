"""Fixtures for the data-stage tests: a local HTTP file server with Range support and spec overrides."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines.datasets import registry


class RangeFileHandler(BaseHTTPRequestHandler):
    """Serves files of `server.state.root`, honouring `Range: bytes=N-`.

    `state.drop_once` holds file names whose next response is cut off after half its body;
    `state.fail` maps file names to a number of 503 answers to give first; every request is logged
    in `state.requests` as (name, Range header or None).
    """

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        state = self.server.state  # type: ignore[attr-defined]
        name = urllib.parse.unquote(urllib.parse.urlparse(self.path).path).lstrip("/")
        range_header = self.headers.get("Range")
        state.requests.append((name, range_header))
        if state.fail.get(name, 0) > 0:
            state.fail[name] -= 1
            self._reply(503, b"busy")
            return
        path = state.root / name
        if not name or not path.is_file():
            self._reply(404, b"not found")
            return
        data = path.read_bytes()
        start = 0
        if range_header and state.honour_range:
            match = re.fullmatch(r"bytes=(\d+)-", range_header)
            assert match, range_header
            start = int(match.group(1))
            if start >= len(data):
                self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if name in state.drop_once:
            state.drop_once.discard(name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def _reply(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def file_server(tmp_path: Path):
    """A ThreadingHTTPServer on 127.0.0.1 serving `<tmp>/served/`; `.url` is its base URL."""
    root = tmp_path / "served"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), RangeFileHandler)
    server.daemon_threads = True
    state = SimpleNamespace(root=root, drop_once=set(), fail={}, requests=[], honour_range=True)
    server.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def override_spec(monkeypatch):
    """Replace a registered dataset's archives (checksums, URLs) for one test.

    Call as `override_spec(name, {filename: checksum or None}, urls={filename: url})`.
    """

    def override(name: str, checksums: dict[str, str | None], urls: dict[str, str] | None = None):
        spec = registry.get_spec(name)
        archives = tuple(
            dataclasses.replace(
                a,
                checksum=checksums.get(a.filename, a.checksum),
                url=(urls or {}).get(a.filename, a.url),
            )
            for a in spec.archives
        )
        new = dataclasses.replace(spec, archives=archives)
        monkeypatch.setitem(registry._DATASETS, name, new)
        return new

    return override


def tree(root: Path) -> set[str]:
    """Every path under `root`, relative, as strings."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def tree_of():
    return tree
