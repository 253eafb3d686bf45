"""Storage failures reach the user as one line naming the URI and the likely fix, for every
command that touches storage; against the moto server or a stub S3 endpoint answering errors."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from logitcache.cli import main


def _no_credentials(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def fresh_s3(monkeypatch):
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    yield
    s3fs.S3FileSystem.clear_instance_cache()


class ErrorEndpoint:
    """An S3 endpoint that answers every request with one HTTP status and S3 error code."""

    def __init__(self, status: int, code: str):
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{code}</Message></Error>"
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


COMMANDS = {
    "info": lambda uri, tmp: ["info", uri],
    "verify": lambda uri, tmp: ["verify", uri],
    "catalog": lambda uri, tmp: ["catalog", "ls", uri],
    "train": lambda uri, tmp: ["train", "--cache", uri, "--out", str(tmp / "run")],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_credentials(command, monkeypatch, capsys, fresh_s3, s3_endpoint, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    _no_credentials(monkeypatch)
    uri = "s3://some-bucket/caches/c1"
    assert main(COMMANDS[command](uri, tmp_path)) == 2
    _one_line_error(capsys, uri, "no credentials", "AWS_ACCESS_KEY_ID")


def _forbid_ray_start(monkeypatch):
    from logitcache.capture.executors import RayExecutor

    def refuse(self):
        raise AssertionError("a Ray runtime was started before the inputs were checked")

    monkeypatch.setattr(RayExecutor, "__enter__", refuse)


@pytest.mark.parametrize("command", ["build", "generate"])
def test_no_credentials_for_a_build_output_fails_before_ray_or_the_teacher(
    command, monkeypatch, capsys, fresh_s3, s3_endpoint, tmp_path, teacher_dir, pydoc_jsonl
):
    import time

    _forbid_ray_start(monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    _no_credentials(monkeypatch)
    uri = "s3://some-bucket/caches/c1"
    inputs = (
        ["--corpus", str(pydoc_jsonl)] if command == "build" else ["--prompts", str(pydoc_jsonl)]
    )
    t0 = time.monotonic()
    # Ray is on (the default): the output is probed before a Ray runtime would start.
    assert main([command, "--teacher", teacher_dir, *inputs, "--out", uri]) == 2
    assert time.monotonic() - t0 < 8
    _one_line_error(capsys, uri, "no credentials")


def test_endpoint_unreachable(monkeypatch, capsys, fresh_s3):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert main(["info", "s3://some-bucket/c"]) == 2
    _one_line_error(capsys, "s3://some-bucket/c", "unreachable", f"127.0.0.1:{port}")


@pytest.mark.parametrize(
    "status,code,needle",
    [(403, "AccessDenied", "access denied"), (503, "SlowDown", "throttling")],
)
def test_access_denied_and_throttled(status, code, needle, monkeypatch, capsys, fresh_s3):
    endpoint = ErrorEndpoint(status, code)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint.url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        assert main(["info", "s3://some-bucket/c"]) == 2
        _one_line_error(capsys, "s3://some-bucket/c", needle)
    finally:
        endpoint.close()


def test_bucket_missing(monkeypatch, capsys, fresh_s3, s3_bucket):
    uri = f"s3://{s3_bucket}-absent/caches/c1"
    assert main(["info", uri]) == 2
    _one_line_error(capsys, uri, "bucket", "does not exist")


def test_bad_storage_options_fail_before_ray(
    capsys, monkeypatch, teacher_dir, pydoc_jsonl, tmp_path
):
    _forbid_ray_start(monkeypatch)
    args = ["build", "--teacher", teacher_dir, "--corpus", str(pydoc_jsonl)]
    assert main([*args, "--out", str(tmp_path / "c"), "--storage-options", "{not json"]) == 2
    _one_line_error(capsys, "--storage-options is not valid JSON")
    assert main([*args[:-1], str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "c")]) == 2
    _one_line_error(capsys, "does not exist")


def test_missing_local_student_says_so(capsys, tmp_path):
    from logitcache.errors import ConfigError
    from logitcache.train.student import load_student

    with pytest.raises(ConfigError, match="no such directory"):
        load_student(str(tmp_path / "nonexistent"))


def test_pipelines_share_the_cli_error_handling(monkeypatch, capsys, fresh_s3, s3_endpoint):
    from pipelines.build_cache import main as build_main

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    _no_credentials(monkeypatch)
    rc = build_main(
        ["--teacher", "x", "--corpus", "s3://some-bucket/corpus.jsonl", "--out", "/tmp/x"]
    )
    assert rc == 2
    err = _one_line_error(capsys, "no credentials")
    assert err.startswith("build_cache build: error:")
