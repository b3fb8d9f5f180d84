"""Azurite, the local Azure Storage emulator, started on a free loopback port for the upload tests.

Installed by ``scripts/setup.sh`` (``npm install --prefix . azurite@3``). The blob service runs in
memory and is stopped when the context ends. Used by the tests and by ``benchmarks/upload_bench.py``.
With a certificate it serves HTTPS, and with ``oauth`` it also accepts Microsoft Entra ID bearer
tokens (``--oauth basic``: audience, issuer and lifetime checked, signature not; bearer tokens are
refused over HTTP).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import http.client
import http.server
import os
import random
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from support.loopback import quiet_server

if TYPE_CHECKING:
    from support.identity import Certificate

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key (not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# A second account (its key made up here, base64 of a fixed text), for copies across accounts.
SECOND_ACCOUNT = "secondaccount"
SECOND_KEY = base64.b64encode(b"vhdtool test key of the second Azurite account, not a secret").decode()


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
    """A running Azurite blob service (``accounts``: name -> key; the first is the default)."""

    port: int
    accounts: tuple[tuple[str, str], ...] = ((ACCOUNT, ACCOUNT_KEY),)
    scheme: str = "http"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{ACCOUNT}"

    def connection_string(self, endpoint: str | None = None, account: str = ACCOUNT) -> str:
        """A connection string for ``account`` on this service, or at ``endpoint`` (a proxy's ``http://host:port``
        followed by the account, as :attr:`RecordingProxy.endpoint` gives it for the default account)."""
        key = dict(self.accounts)[account]
        if endpoint is None:
            endpoint = f"{self.scheme}://127.0.0.1:{self.port}/{account}"
        elif account != ACCOUNT and endpoint.endswith(f"/{ACCOUNT}"):
            endpoint = endpoint[: -len(ACCOUNT)] + account
        return (f"DefaultEndpointsProtocol={self.scheme};AccountName={account};AccountKey={key};"
                f"BlobEndpoint={endpoint};")


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
def running_azurite(timeout: float = 30.0, second_account: bool = False, *, certificate: Certificate | None = None,
                    oauth: bool = False) -> Iterator[Azurite]:
    """Start ``azurite-blob`` in memory on a free port, wait until it answers, stop it afterwards.

    ``second_account`` adds :data:`SECOND_ACCOUNT` (Azurite's ``AZURITE_ACCOUNTS``, which then
    has to list the default account too), so copies can cross accounts. With ``certificate`` it
    serves HTTPS (``--cert --key``); ``oauth`` adds ``--oauth basic``.
    """
    if oauth and certificate is None:
        raise ValueError("Azurite accepts bearer tokens only over HTTPS: give a certificate")
    binary = azurite_binary()
    if binary is None:
        raise FileNotFoundError("azurite-blob not found: run scripts/setup.sh "
                                "(npm install --prefix . azurite@3)")
    port = free_port()
    # Azurite writes its debug log and extent files into the working directory: keep them in a temp dir.
    workdir = tempfile.mkdtemp(prefix="azurite-")
    args = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
            "--skipApiVersionCheck", "--disableTelemetry", "--loose", "--silent"]
    if certificate is not None:
        args += ["--cert", str(certificate.cert), "--key", str(certificate.key)]
    if oauth:
        args += ["--oauth", "basic"]
    accounts = ((ACCOUNT, ACCOUNT_KEY),) + (((SECOND_ACCOUNT, SECOND_KEY),) if second_account else ())
    env = dict(os.environ)
    if second_account:
        env["AZURITE_ACCOUNTS"] = ";".join(f"{name}:{key}" for name, key in accounts)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=workdir, env=env)
    try:
        _wait_until_listening(port, proc, time.monotonic() + timeout)
        yield Azurite(port, accounts, "https" if certificate is not None else "http")
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
    response_length: int = 0  # body bytes of the answer Azurite gave (what crossed the wire to the client)
    copy_source: str | None = None  # Put Page From URL: the x-ms-copy-source URL
    copy_source_authorization: str | None = None  # and its x-ms-copy-source-authorization, if any

    @property
    def is_put_page(self) -> bool:
        return self.page_write == "update"


# What an "answer" rule says instead of Azurite: status, headers, body.
Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Rule:
    """Answer matching requests with ``action`` (``"delay"``, a kind of :data:`FAULT_KINDS`, any HTTP status, or
    ``"answer"``) for the next ``times`` matches. ``"delay"`` waits ``seconds`` before forwarding; ``"slow"``
    after; ``"answer"`` calls ``answer`` with the request: what it returns is sent in Azurite's place
    (``None``: the request is forwarded as usual)."""

    match: Callable[[Recorded], bool]
    action: str
    times: int = 1
    retry_after: float | None = None
    seconds: float = 0.0
    code: str = "Injected"  # the x-ms-error-code of an answered status
    answer: Callable[[Recorded], Answer | None] | None = None


def storage_error(status: int, code: str, message: str, detail: str | None = None,
                  headers: dict[str, str] | None = None) -> Answer:
    """An error as Azure Storage sends it: ``x-ms-error-code`` and an XML body (with
    ``AuthenticationErrorDetail`` for a refused credential, as Azure adds it)."""
    extra = f"<AuthenticationErrorDetail>{detail}</AuthenticationErrorDetail>" if detail else ""
    when = time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime())
    body = (f"<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}\n"
            f"RequestId:00000000-0000-0000-0000-000000000000\nTime:{when}</Message>{extra}</Error>").encode()
    return status, {"Content-Type": "application/xml", "x-ms-error-code": code, **(headers or {})}, body


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
    """A threaded HTTP/1.1 reverse proxy on 127.0.0.1 forwarding to ``upstream_port``.

    With ``certificate`` it serves HTTPS; ``upstream_tls`` (a client context trusting Azurite's
    certificate) makes it talk HTTPS to Azurite. ``rewrite`` may change the headers it forwards.
    """

    def __init__(self, upstream_port: int, *, certificate: Certificate | None = None,
                 upstream_tls: ssl.SSLContext | None = None) -> None:
        self.upstream_port = upstream_port
        self.upstream_tls = upstream_tls
        self.scheme = "https" if certificate is not None else "http"
        self.rewrite: Callable[[Recorded, dict[str, str]], dict[str, str]] | None = None
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
        # Get Page Ranges paging, as the service does it from REST version 2020-10-02 (``maxresults``
        # and ``marker``, answers linked by ``NextMarker``) and Azurite does not (it lists every
        # range in one answer): at most this many ranges per answer when set.
        self.page_list_limit: int | None = None
        # Put Page From URL, which Azurite answers with 501: when set (account name -> key), the
        # proxy stands in for the service (see _put_page_from_url) instead of forwarding.
        self.copy_from_url_keys: dict[str, str] | None = None
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

        self.server = quiet_server(Handler)
        if certificate is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(certificate.cert), str(certificate.key))
            # The handshake happens in each connection's own thread, on its first read.
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True,
                                                     do_handshake_on_connect=False)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{ACCOUNT}"

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
            self.rewrite = None

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
            rec.copy_source = headers.get("x-ms-copy-source")
            rec.copy_source_authorization = headers.get("x-ms-copy-source-authorization")
            if rec.page_write == "update" and rec.copy_source is None:
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
        if rule is not None and rule.action == "answer":
            answer = rule.answer(rec) if rule.answer is not None else None
            if answer is None:
                rule = None  # nothing to say: forwarded as usual
            else:
                with self._lock:
                    self.injected["answer"] += 1
                rec.fault = "answer"
                rec.status = answer[0]
                self._reply(h, *answer)
                return
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
            message = (f"<?xml version='1.0'?><Error><Code>{rule.code}</Code><Message>injected</Message>"
                       "</Error>").encode()
            rec.status = status  # recorded before the answer leaves: the client may look at once
            self._reply(h, status, {"Content-Type": "application/xml", "x-ms-error-code": rule.code, **extra},
                        message)
            return
        if rule is not None and rule.action == "delay":
            time.sleep(rule.seconds)
        if rec.copy_source is not None and self.copy_from_url_keys is not None:
            status, reply_headers, reply = self._put_page_from_url(rec, parts.path, self.copy_from_url_keys)
            rec.status = status
            self._reply(h, status, reply_headers, reply)
            return
        if rec.is_put_page:
            with self._lock:
                self.in_flight += 1
                self.max_in_flight_puts = max(self.max_in_flight_puts, self.in_flight)
        try:
            status, reply_headers, reply = self._forward(h.command, h.path, h.headers, body, rec)
        finally:
            if rec.is_put_page:
                with self._lock:
                    self.in_flight -= 1
        if status == 200 and query.get("comp") == "pagelist" and self.page_list_limit:
            reply = self._page(reply, query, self.page_list_limit)
        rec.status = status
        rec.response_length = len(reply) if h.command != "HEAD" else 0
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

    def _forward(self, method: str, path: str, headers: Any, body: bytes,
                 rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        if self.upstream_tls is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", self.upstream_port, timeout=60, context=self.upstream_tls)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            forward = {k: v for k, v in headers.items() if k.lower() not in ("connection", "keep-alive")}
            rewrite = self.rewrite
            if rewrite is not None:
                forward = rewrite(rec, forward)
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

    def _put_page_from_url(self, rec: Recorded, path: str,
                           keys: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """A stand-in for the service's Put Page From URL, following its REST reference for x-ms-version
        2020-10-02 and later: the source range (``x-ms-source-range``) and the destination range
        (``x-ms-range``) are the same length, at most 4 MiB, in whole 512-byte pages, and the body is
        empty; the service reads the range from ``x-ms-copy-source`` (authorized by the URL's SAS, or
        by the ``x-ms-copy-source-authorization`` bearer token, which the stand-in passes on as the
        read's ``Authorization``: checked by an Azurite serving HTTPS with ``--oauth basic``, refused by
        one over HTTP), answers 201 when the pages are written, and a 4xx with the code
        CannotVerifyCopySource when it cannot read the source. The pages are written with an
        ordinary Put Page signed with the destination account's key; the source is read straight
        from Azurite, so neither leg is recorded as traffic of the client. Behind an HTTPS Azurite
        (``upstream_tls``) both legs use HTTPS, the write trusting ``REQUESTS_CA_BUNDLE``.
        """
        def error(status: int, code: str) -> tuple[int, dict[str, str], bytes]:
            body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{code}</Message></Error>".encode()
            return status, {"Content-Type": "application/xml", "x-ms-error-code": code}, body

        def span(spec: str | None) -> tuple[int, int] | None:
            if not spec or not spec.startswith("bytes="):
                return None
            a, _, b = spec[6:].partition("-")
            return int(a), int(b) + 1

        source_range = span(rec.headers.get("x-ms-source-range"))
        dest_range = span(rec.headers.get("x-ms-range") or rec.headers.get("range"))
        if source_range is None or dest_range is None or rec.body_length:
            return error(400, "InvalidHeaderValue")
        length = dest_range[1] - dest_range[0]
        if (source_range[1] - source_range[0] != length or length > 4 * 1024 * 1024 or length <= 0
                or dest_range[0] % 512 or length % 512):
            return error(400, "InvalidPageRange")
        rec.offset, rec.length = dest_range[0], length
        source = urllib.parse.urlsplit(rec.copy_source or "")
        if self.upstream_tls is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", self.upstream_port, timeout=60, context=self.upstream_tls)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            target = source.path + (f"?{source.query}" if source.query else "")
            read = {"x-ms-range": f"bytes={source_range[0]}-{source_range[1] - 1}", "x-ms-version": "2021-08-06"}
            if rec.copy_source_authorization:
                read["Authorization"] = rec.copy_source_authorization
            conn.request("GET", target, headers=read)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status not in (200, 206) or len(data) != length:
            return error(response.status if 400 <= response.status < 500 else 403, "CannotVerifyCopySource")
        from azure.storage.blob import BlobClient

        account, _, rest = path.lstrip("/").partition("/")
        container, _, blob = rest.partition("/")
        if account not in keys:
            return error(403, "AuthenticationFailed")
        scheme = "https" if self.upstream_tls is not None else "http"
        connection = (f"DefaultEndpointsProtocol={scheme};AccountName={account};AccountKey={keys[account]};"
                      f"BlobEndpoint={scheme}://127.0.0.1:{self.upstream_port}/{account};")
        client = BlobClient.from_connection_string(connection, container, urllib.parse.unquote(blob))
        result = client.upload_page(data, dest_range[0], length)
        return 201, {"ETag": str(result.get("etag")), "x-ms-request-server-encrypted": "false"}, b""

    @staticmethod
    def _page(reply: bytes, query: dict[str, str], limit: int) -> bytes:
        """One page of a Get Page Ranges answer: ranges from ``marker`` on, at most ``maxresults``/``limit``."""
        import xml.etree.ElementTree as ET

        root = ET.fromstring(reply)
        ranges = [(int(r.findtext("Start") or 0), int(r.findtext("End") or 0)) for r in root.iter("PageRange")]
        start = int(query.get("marker") or 0)
        count = min(limit, int(query.get("maxresults") or limit))
        chosen = [r for r in ranges if r[0] >= start]
        page, rest = chosen[:count], chosen[count:]
        body = "".join(f"<PageRange><Start>{a}</Start><End>{b}</End></PageRange>" for a, b in page)
        marker = f"<NextMarker>{rest[0][0]}</NextMarker>" if rest else "<NextMarker />"
        return f'<?xml version="1.0" encoding="utf-8"?><PageList>{body}{marker}</PageList>'.encode()

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
