"""S3 answering with throttling, 5xx errors and dropped connections (a fault-injecting proxy in
front of the moto server): retried with backoff and the build completes; when faults persist,
a clear StorageError, and the cache stays readable and consistent either way."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest
from config_sections import capture_config
from rel_helpers import build_kwargs

from logitcache.capture import build_cache
from logitcache.errors import StorageError
from logitcache.format import open_cache, verify_cache

SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
INTERNAL = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)


class FaultProxy:
    """Forwards to ``upstream``; requests numbered in ``[start, stop)`` get a fault instead:
    cycling through 503 SlowDown, 500 InternalError and a dropped connection."""

    def __init__(self, upstream: str):
        self.upstream = urlparse(upstream)
        self.count = 0
        self.faults = 0
        self.window = (0, 0)
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy.lock:
                    n = proxy.count
                    proxy.count += 1
                    faulty = proxy.window[0] <= n < proxy.window[1]
                    proxy.faults += faulty
                if faulty:
                    kind = n % 3
                    if kind == 2:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    status, payload = (503, SLOWDOWN) if kind == 0 else (500, INTERNAL)
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self, start: int, stop: int) -> None:
        with self.lock:
            self.window = (start, stop)

    def close(self):
        self.server.shutdown()


@pytest.fixture
def proxy(s3_bucket, s3_endpoint, monkeypatch):
    import s3fs

    p = FaultProxy(s3_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", p.url)
    s3fs.S3FileSystem.clear_instance_cache()
    yield p
    p.close()
    s3fs.S3FileSystem.clear_instance_cache()


def _direct(s3_endpoint, monkeypatch):
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    s3fs.S3FileSystem.clear_instance_cache()


def test_transient_throttling_and_5xx_are_retried(
    proxy, s3_bucket, s3_endpoint, teacher_dir, paragraphs_jsonl, monkeypatch
):
    uri = f"s3://{s3_bucket}/caches/retried"
    kw = build_kwargs(teacher_dir, paragraphs_jsonl, uri, unit_tokens=80)
    proxy.fail(2, 5)  # one 503 SlowDown, one 500, one dropped connection, in a row
    m = build_cache(capture_config(**kw))
    assert proxy.faults == 3 and m.status == "complete" and len(m.shards) >= 3
    _direct(s3_endpoint, monkeypatch)
    cache = open_cache(uri)
    assert verify_cache(cache).ok and cache.manifest.num_tokens == 400


def test_persistent_faults_give_storage_error_and_a_consistent_cache(
    proxy, s3_bucket, s3_endpoint, teacher_dir, paragraphs_jsonl, monkeypatch
):
    uri = f"s3://{s3_bucket}/caches/outage"
    # A long lease TTL: no heartbeat renewals, whose number depends on the machine's speed,
    # so the cut is at the same point of both builds.
    kw = build_kwargs(teacher_dir, paragraphs_jsonl, uri, unit_tokens=80, lease_ttl=3600.0)
    # Measure a healthy build's requests elsewhere, then cut this one off two thirds of the
    # way: past the prologue (input checks, lease, manifest), inside the unit commits.
    start = proxy.count
    build_cache(capture_config(**{**kw, "out": uri + "-probe"}))
    per_build = proxy.count - start
    proxy.fail(proxy.count + per_build * 2 // 3, 10**9)
    with pytest.raises(StorageError, match="re-run the same command|failed"):
        build_cache(capture_config(**kw))
    assert proxy.faults > 3  # it retried before giving up
    _direct(s3_endpoint, monkeypatch)
    cache = open_cache(uri)
    report = verify_cache(cache)
    assert report.ok and cache.manifest.status == "building"
    # The endpoint is back: the same build finishes the missing units only.
    m = build_cache(capture_config(**kw))
    assert m.status == "complete" and m.num_tokens == 400
    assert m.stats["run"]["units_skipped"] == len(cache.shards)
    assert verify_cache(open_cache(uri)).ok
