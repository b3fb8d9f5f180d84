"""Azurite, the local Azure Storage emulator, started on a free loopback port for the upload tests.

Installed by ``scripts/setup.sh`` (``npm install --prefix . azurite@3``). The blob service runs in
memory and is stopped when the context ends. Used by the tests and by ``benchmarks/upload_bench.py``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import http.server
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key (not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_binary() -> str | None:
    """``node_modules/.bin/azurite-blob`` of the checkout, else one on ``PATH``."""
    local = ROOT / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    return shutil.which("azurite-blob")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Azurite:
    """A running Azurite blob service."""

    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def connection_string(self, endpoint: str | None = None) -> str:
        """A connection string for this service, or for ``endpoint`` (e.g. a proxy in front of it)."""
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={endpoint or self.endpoint};")


def _wait_until_listening(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"azurite-blob exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("azurite-blob did not start listening in time")


@contextmanager
def running_azurite(timeout: float = 30.0) -> Iterator[Azurite]:
    """Start ``azurite-blob`` in memory on a free port, wait until it answers, stop it afterwards."""
    binary = azurite_binary()
    if binary is None:
        raise FileNotFoundError("azurite-blob not found: run scripts/setup.sh "
                                "(npm install --prefix . azurite@3)")
    port = free_port()
    # Azurite writes its debug log and extent files into the working directory: keep them in a temp dir.
    workdir = tempfile.mkdtemp(prefix="azurite-")
    args = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
            "--skipApiVersionCheck", "--disableTelemetry", "--loose", "--silent"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=workdir)
    try:
        _wait_until_listening(port, proc, time.monotonic() + timeout)
        yield Azurite(port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


# -- a recording, fault-injecting loopback proxy in front of Azurite --------------------------------
#
# Azurite neither enforces the 4 MiB Put Page limit nor checks Content-MD5, so every request goes
# through this proxy, which records what the client sent (and checks it) and can answer in
# Azurite's place: a 503 with Retry-After, a 403, or a connection dropped before or after the
# request reached Azurite.


@dataclass
class Recorded:
    """One request as the proxy saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body_length: int
    time: float
    page_write: str | None = None  # "update" or "clear" for Put Page
    offset: int | None = None
    length: int | None = None
    md5_ok: bool | None = None
    fault: str | None = None  # what the proxy did instead of (or after) forwarding
    status: int | None = None

    @property
    def is_put_page(self) -> bool:
        return self.page_write == "update"


@dataclass
class Rule:
    """Answer matching requests with ``action`` (``"503"``, ``"403"``, ``"drop"``, ``"drop-after"``,
    ``"delay"``) for the next ``times`` matches."""

    match: Callable[[Recorded], bool]
    action: str
    times: int = 1
    retry_after: float | None = None
    seconds: float = 0.0


class RecordingProxy:
    """A threaded HTTP/1.1 reverse proxy on 127.0.0.1 forwarding to ``upstream_port``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.requests: list[Recorded] = []
        self.rules: list[Rule] = []
        self.in_flight = 0
        self.max_in_flight_puts = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            do_PUT = do_HEAD = do_DELETE = do_POST = do_GET

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A client that went away (killed, timed out) makes the reply fail: expected, not worth a traceback.
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def put_pages(self) -> list[Recorded]:
        """The Put Page (update) requests Azurite applied, in arrival order."""
        return [r for r in self.requests if r.is_put_page and r.status is not None and r.status < 300]

    def add_rule(self, rule: Rule) -> None:
        with self._lock:
            self.rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.rules.clear()
            self.max_in_flight_puts = 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _match(self, rec: Recorded) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.times > 0 and rule.match(rec):
                    rule.times -= 1
                    return rule
        return None

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        parts = urllib.parse.urlsplit(h.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        headers = {k.lower(): v for k, v in h.headers.items()}
        rec = Recorded(h.command, parts.path, query, headers, len(body), time.monotonic())
        if query.get("comp") == "page":
            rec.page_write = headers.get("x-ms-page-write")
            spec = headers.get("x-ms-range") or headers.get("range") or ""
            if spec.startswith("bytes="):
                a, _, b = spec[6:].partition("-")
                rec.offset, rec.length = int(a), int(b) - int(a) + 1
            if rec.page_write == "update":
                sent = headers.get("content-md5")
                rec.md5_ok = sent is not None and base64.b64decode(sent) == hashlib.md5(body).digest()
        with self._lock:
            self.requests.append(rec)
        rule = self._match(rec)
        if rule is not None and rule.action in ("503", "403", "drop"):
            rec.fault = rule.action
            if rule.action == "drop":
                self._drop(h)
                return
            status = int(rule.action)
            extra = {"Retry-After": f"{rule.retry_after:g}"} if rule.retry_after is not None else {}
            message = b"<?xml version='1.0'?><Error><Code>Injected</Code><Message>injected</Message></Error>"
            self._reply(h, status, {"Content-Type": "application/xml", **extra}, message)
            rec.status = status
            return
        if rule is not None and rule.action == "delay":
            time.sleep(rule.seconds)
        if rec.is_put_page:
            with self._lock:
                self.in_flight += 1
                self.max_in_flight_puts = max(self.max_in_flight_puts, self.in_flight)
        try:
            status, reply_headers, reply = self._forward(h.command, h.path, h.headers, body)
        finally:
            if rec.is_put_page:
                with self._lock:
                    self.in_flight -= 1
        rec.status = status
        if rule is not None and rule.action == "drop-after":
            rec.fault = rule.action  # Azurite applied it; the client never hears so
            self._drop(h)
            return
        self._reply(h, status, reply_headers, reply)

    def _forward(self, method: str, path: str, headers: Any,
                 body: bytes) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            forward = {k: v for k, v in headers.items() if k.lower() not in ("connection", "keep-alive")}
            conn.request(method, path, body=body if body else None, headers=forward)
            response = conn.getresponse()
            data = response.read()
            # A HEAD answer's Content-Length is the blob's size, not this body's: keep it.
            dropped = ("transfer-encoding", "connection", "keep-alive") + (() if method == "HEAD" else
                                                                          ("content-length",))
            reply = {k: v for k, v in response.getheaders() if k.lower() not in dropped}
            return response.status, reply, data
        finally:
            conn.close()

    @staticmethod
    def _reply(h: http.server.BaseHTTPRequestHandler, status: int, headers: dict[str, str],
               body: bytes) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        if not any(k.lower() == "content-length" for k in headers):
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    @staticmethod
    def _drop(h: http.server.BaseHTTPRequestHandler) -> None:
        h.close_connection = True
        with contextlib.suppress(OSError):
            h.connection.shutdown(socket.SHUT_RDWR)
