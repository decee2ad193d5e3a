"""Parsing of RUN@EPOCH and PROJECT/NAME references, and the zip the client uploads for a folder."""

import socket
import threading
import zipfile

import pytest

from crucible.cli import describe
from crucible.client import ApiError, Client, parse_object_ref, parse_run_ref, zipped
from tests.cli.conftest import make_digit_folder


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("digits/TestA", ("digits/TestA", None)),
        ("digits/TestA@10", ("digits/TestA", 10)),
        ("12@3", ("12", 3)),
        ("12", ("12", None)),
        (" digits/TestA@25 ", ("digits/TestA", 25)),
    ],
)
def test_run_at_epoch(text, expected):
    assert parse_run_ref(text) == expected


@pytest.mark.parametrize("text", ["digits/TestA@", "digits/TestA@0", "digits/TestA@x", "@3", "a@-1"])
def test_bad_run_at_epoch(text):
    with pytest.raises(ValueError):
        parse_run_ref(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("7", 7), ("digits/minidata", ("digits", "minidata")), ("digits/a/b", ("digits", "a/b"))],
)
def test_project_slash_name(text, expected):
    assert parse_object_ref(text) == expected


@pytest.mark.parametrize("text", ["minidata", "/minidata", "digits/", ""])
def test_bad_project_slash_name(text):
    with pytest.raises(ValueError):
        parse_object_ref(text)


def test_folder_is_zipped_with_class_subfolders_at_the_top(tmp_path):
    folder = make_digit_folder(tmp_path / "train_small", {"0": 2, "1": 1})
    (folder / ".DS_Store").write_text("junk")
    with zipped(folder) as fh, zipfile.ZipFile(fh) as zf:
        assert sorted(zf.namelist()) == ["0/0_0.png", "0/0_1.png", "1/1_0.png"]


def test_missing_path_is_not_zipped(tmp_path):
    with pytest.raises(FileNotFoundError), zipped(tmp_path / "nope"):
        pass


def test_error_line_names_message_code_and_other_fields():
    exc = ApiError(400, "invalid", "epochs: must be at least 1", {"epochs": "must be at least 1", "lr": "too big"})
    assert describe(exc) == "epochs: must be at least 1; lr: too big (invalid)"
    assert describe(ApiError(404, "not_found", "dataset 'demo/nope' not found")) == "dataset 'demo/nope' not found"
    assert "crucible login" in describe(ApiError(401, "not_authenticated", "no credentials"))
    assert describe(ApiError(0, "connection", "cannot connect to http://x (Connection refused)")) == (
        "cannot connect to http://x (Connection refused)"
    )


class FlakyServer:
    """A local HTTP server that drops its first connection without answering, then answers `{}`."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.connections = 0
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.recv(65536)
                if self.connections > 1:
                    body = b"{}"
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )


def test_gets_are_retried_after_a_dropped_connection_and_writes_are_not():
    server = FlakyServer()
    assert Client(server.url, "t", backoff=0).me() == {}
    assert server.connections == 2

    server = FlakyServer()
    with pytest.raises(ApiError) as exc:
        Client(server.url, "t", backoff=0).project_create("x")
    assert exc.value.code == "connection" and server.url in exc.value.message
    assert server.connections == 1
