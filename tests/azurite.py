"""Azurite, the local Azure Storage emulator, started on a free loopback port for the upload tests.

Installed by ``scripts/setup.sh`` (``npm install --prefix . azurite@3``). The blob service runs in
memory and is stopped when the context ends. Used by the tests and by ``benchmarks/upload_bench.py``.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import http.client
import http.server
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
# Azurite's place: a 503 with Retry-After, a 500, a 403, a connection dropped before or after the
# request reached Azurite, a response cut short, or a slow one. Faults come from rules (exact
# scenarios) or at random at a given rate (:class:`RandomFaults`, for soaks).

# What a random fault does to a request:
#   503         answered in Azurite's place, with Retry-After (seconds from RandomFaults.retry_after)
#   500         answered in Azurite's place, no Retry-After (the client backs off by itself)
#   drop        the connection is closed before the request reaches Azurite
#   drop-after  Azurite applies the request, then the connection is closed: the answer is lost
#   cut         Azurite applies it, then half the answer is sent (half the body, or half the header
#               block when there is no body) and the connection is closed
#   slow        Azurite applies it and the answer comes late (RandomFaults.slow_seconds)
FAULT_KINDS = ("503", "500", "drop", "drop-after", "cut", "slow")
# Faults after which the client has to try again (a slow answer is still an answer).
FAILING_FAULTS = frozenset({"503", "500", "403", "drop", "drop-after", "cut"})


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
    fault: str | None = None  # what the proxy did instead of (or after) forwarding; "incomplete": body cut
    status: int | None = None

    @property
    def is_put_page(self) -> bool:
        return self.page_write == "update"


@dataclass
class Rule:
    """Answer matching requests with ``action`` (``"delay"``, a kind of :data:`FAULT_KINDS`, or any HTTP status)
    for the next ``times`` matches. ``"delay"`` waits ``seconds`` before forwarding; ``"slow"`` after."""

    match: Callable[[Recorded], bool]
    action: str
    times: int = 1
    retry_after: float | None = None
    seconds: float = 0.0


def _every_request(rec: Recorded) -> bool:
    return True


@dataclass
class RandomFaults:
    """Faults at random, for soaks: each matching request is hit with probability ``rate``.

    The kinds are dealt from a deck shuffled by a seeded RNG (list a kind twice to make it twice as
    common), so every kind comes up once per ``len(kinds)`` faults however the threads interleave,
    and a short run still meets them all.
    """

    rate: float
    seed: int = 0
    kinds: tuple[str, ...] = FAULT_KINDS
    retry_after: tuple[float, ...] = (0.0, 1.0)
    slow_seconds: tuple[float, float] = (0.2, 1.0)
    match: Callable[[Recorded], bool] = field(default=_every_request)

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown or not self.kinds or not 0 <= self.rate <= 1:
            raise ValueError(f"bad random faults: rate {self.rate}, unknown kinds {sorted(unknown)}")


class RecordingProxy:
    """A threaded HTTP/1.1 reverse proxy on 127.0.0.1 forwarding to ``upstream_port``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.requests: list[Recorded] = []
        self.rules: list[Rule] = []
        self.in_flight = 0
        self.max_in_flight_puts = 0
        self.active = 0  # requests being handled (read, held, forwarded or answered)
        self.connections = 0  # client connections open
        self.injected: collections.Counter[str] = collections.Counter()  # faults done, by kind
        # Called with each request as soon as it is recorded, before it is answered or forwarded
        # (from the proxy's thread): a soak uses it to kill the client at an exact request.
        self.on_request: Callable[[Recorded], None] | None = None
        self._faults: RandomFaults | None = None
        self._rng = random.Random(0)
        self._deck: list[str] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle(self) -> None:
                # Counted from accept to close: a killed client's last request may still sit unread in
                # this connection's buffer when it dies, and is handled only after that.
                with proxy._lock:
                    proxy.connections += 1
                try:
                    super().handle()
                finally:
                    with proxy._lock:
                        proxy.connections -= 1
                        proxy._idle.notify_all()

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

    def set_faults(self, faults: RandomFaults | None) -> None:
        """Inject ``faults`` from now on (``None``: no more random faults); restarts their RNG."""
        with self._lock:
            self._faults = faults
            self._rng = random.Random(faults.seed if faults else 0)
            self._deck = []

    def clear(self) -> None:
        """Forget requests, rules, random faults and counts: a fresh start for the next test."""
        with self._lock:
            self.requests.clear()
            self.rules.clear()
            self.max_in_flight_puts = 0
            self.injected.clear()
            self._faults = None
            self.on_request = None

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Once the clients have exited: wait until their connections are closed and no request is being
        handled, so a killed client's last requests have reached Azurite (or been dropped) before anyone
        looks at the blob or starts another client; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self.active or self.connections:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _match(self, rec: Recorded) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.times > 0 and rule.match(rec):
                    rule.times -= 1
                    return rule
            faults = self._faults
            if faults is None or not faults.match(rec) or self._rng.random() >= faults.rate:
                return None
            if not self._deck:
                self._deck = list(faults.kinds)
                self._rng.shuffle(self._deck)
            kind = self._deck.pop()
            retry_after = self._rng.choice(faults.retry_after) if kind == "503" and faults.retry_after else None
            return Rule(faults.match, kind, retry_after=retry_after, seconds=self._rng.uniform(*faults.slow_seconds))

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.active += 1
        try:
            self._handle_one(h)
        finally:
            with self._lock:
                self.active -= 1
                self._idle.notify_all()

    def _handle_one(self, h: http.server.BaseHTTPRequestHandler) -> None:
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
        if len(body) < length:
            # The client died in the middle of its request: a service never applies a request whose
            # body did not arrive, and forwarding it would leave Azurite waiting for the rest.
            rec.fault = "incomplete"
            self._drop(h)
            return
        hook = self.on_request
        if hook is not None:
            hook(rec)
        rule = self._match(rec)
        if rule is not None and rule.action != "delay":
            with self._lock:
                self.injected[rule.action] += 1
        if rule is not None and (rule.action.isdigit() or rule.action == "drop"):
            rec.fault = rule.action
            if rule.action == "drop":
                self._drop(h)
                return
            status = int(rule.action)
            extra = {"Retry-After": f"{rule.retry_after:g}"} if rule.retry_after is not None else {}
            message = b"<?xml version='1.0'?><Error><Code>Injected</Code><Message>injected</Message></Error>"
            rec.status = status  # before the answer: the client may look at the record as soon as it has it
            self._reply(h, status, {"Content-Type": "application/xml", **extra}, message)
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
        if rule is not None and rule.action == "cut":
            rec.fault = rule.action  # Azurite applied it; the client hears half the answer
            self._cut(h, status, reply_headers, reply)
            return
        if rule is not None and rule.action == "slow":
            time.sleep(rule.seconds)
            rec.fault = rule.action
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

    @classmethod
    def _cut(cls, h: http.server.BaseHTTPRequestHandler, status: int, headers: dict[str, str],
             body: bytes) -> None:
        """Send half of the answer (half its body, or half its header block if it has no body), then close."""
        lines = [f"HTTP/1.1 {status} {h.responses.get(status, ('',))[0]}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if not any(k.lower() == "content-length" for k in headers):
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        partial = head + body[:len(body) // 2] if body and h.command != "HEAD" else head[:len(head) // 2]
        with contextlib.suppress(OSError):
            h.wfile.write(partial)
            h.wfile.flush()
        cls._drop(h)

    @staticmethod
    def _drop(h: http.server.BaseHTTPRequestHandler) -> None:
        h.close_connection = True
        with contextlib.suppress(OSError):
            h.connection.shutdown(socket.SHUT_RDWR)
