"""Put Page and ranged Get Blob over plain ``http.client`` connections: the data path of one page blob.

Why not the SDK for these two: an upload is thousands of Put Page requests, and the SDK's pipeline
costs about 1.5 ms of Python per request (measured against Azurite: 1,600 puts of 64 KiB took
5.3 s through the SDK, 2.1 s this way), which on small scattered runs is the bottleneck; its
``download_blob`` on a page blob also lists the page ranges with every read and re-reads a body cut
short after a hidden sleep, a second retry layer under vhdtool's. Everything else about a blob
(properties, create, metadata, listings, clearing) stays with the SDK in
:mod:`vhdtool.azure.storage`, which builds this from its client's public ``url``, ``api_version``
and ``credential``.

Authentication is the client's: a SAS in the URL, its account key credential (REST "Authorize with
Shared Key", signed here), or a bearer token from vhdtool's token credential, never over plain HTTP.
An HTTP(S) proxy from the environment (``https_proxy``, ``http_proxy``, ``no_proxy``) is used as
the SDK uses it: a CONNECT tunnel for HTTPS, absolute request targets for HTTP. One connection per
thread; a connection that failed is dropped. Failures are told by :mod:`vhdtool.azure.failures`,
like the SDK's; this layer never retries.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import hmac
import http.client
import re
import ssl
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vhdtool.azure import signin
from vhdtool.azure.failures import Explain, PermanentError, answer_error, connection_error, cut_short
from vhdtool.errors import TransferError


@dataclass(frozen=True)
class SharedKey:
    """An account key credential: requests are signed with HMAC-SHA256 of their canonical form."""

    account: str
    key: bytes

    def sign(self, verb: str, path: str, headers: dict[str, str], length: int, md5: str,
             query: dict[str, str], if_match: str = "") -> str:
        # Authorize with Shared Key: VERB, then 11 standard headers (Content-Length empty when 0),
        # then the x-ms-* headers sorted, then /account/path and the sorted query parameters.
        standard = [verb, "", "", str(length) if length else "", md5, "", "", "", if_match, "", "", ""]
        ms_headers = sorted((k.lower(), v.strip()) for k, v in headers.items() if k.lower().startswith("x-ms-"))
        resource = f"/{self.account}{path}" + "".join(f"\n{k.lower()}:{v}" for k, v in sorted(query.items()))
        text = "\n".join(standard) + "\n" + "".join(f"{k}:{v}\n" for k, v in ms_headers) + resource
        digest = hmac.new(self.key, text.encode("utf-8"), hashlib.sha256).digest()
        return f"SharedKey {self.account}:{base64.b64encode(digest).decode('ascii')}"


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy from the environment, and the ``Proxy-Authorization`` its URL's user info gives."""

    host: str
    port: int
    authorization: str | None

    @classmethod
    def for_url(cls, url: str) -> Proxy | None:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if urllib.request.proxy_bypass(host):
            return None
        proxy = urllib.request.getproxies().get(parts.scheme.lower())
        if not proxy:
            return None
        if "://" not in proxy:
            proxy = f"http://{proxy}"
        where = urllib.parse.urlsplit(proxy)
        authorization = None
        if where.username is not None:
            user = urllib.parse.unquote(where.username)
            password = urllib.parse.unquote(where.password or "")
            authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return cls(where.hostname or "", where.port or 80, authorization)


class DirectBlob:
    """Put Page and ranged Get Blob of one page blob, one ``http.client`` connection per thread.

    ``count`` is called once per request sent; ``clean`` scrubs secrets from every message;
    ``explain`` says a refused credential plainly; ``bearer`` gives ``Authorization`` values.
    """

    def __init__(self, url: str, api_version: str, *, name: str, timeout: float, clean: Callable[[str], str],
                 count: Callable[[], None], explain: Explain | None = None, key: SharedKey | None = None,
                 bearer: Callable[[], str] | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        self.https = parts.scheme.lower() == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self.path = parts.path
        self.sas = parts.query
        self.api_version = api_version
        self.timeout = timeout
        self.key = key
        self.bearer = bearer
        self.proxy = Proxy.for_url(url)
        self._origin = urllib.parse.urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], "", "", ""))
        self._explain = explain
        self._clean = clean
        self._name = name
        self._count = count
        self._local = threading.local()

    @classmethod
    def for_client(cls, client: Any, *, name: str, timeout: float, clean: Callable[[str], str],
                   count: Callable[[], None], explain: Explain | None = None) -> DirectBlob:
        """The direct path of an SDK ``BlobClient``, authenticated as the client is."""
        url = str(client.url)
        api_version = str(client.api_version)
        credential = client.credential
        https = url.lower().startswith("https://")
        common: dict[str, Any] = {"name": name, "timeout": timeout, "clean": clean, "count": count,
                                  "explain": explain}
        bearer = getattr(credential, "bearer", None)
        if callable(bearer):
            if not https:
                raise PermanentError(clean(f"{name}: a Microsoft Entra ID token is sent only over HTTPS; "
                                           "use an https:// URL"), reason="token-needs-https")
            return cls(url, api_version, bearer=bearer, **common)
        account = getattr(credential, "account_name", None)
        secret = getattr(credential, "account_key", None)
        if isinstance(account, str) and isinstance(secret, str):
            try:
                key = base64.b64decode(secret, validate=True)
            except ValueError:
                raise PermanentError(clean(f"{name}: the account key is not base64")) from None
            return cls(url, api_version, key=SharedKey(account, key), **common)
        if credential is None:  # a SAS in the URL (from the blob URL or the connection string)
            return cls(url, api_version, **common)
        raise PermanentError(clean(f"{name}: unsupported credential {type(credential).__name__}"))

    # -- connections ------------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            host, port = (self.proxy.host, self.proxy.port) if self.proxy else (self.host, self.port)
            if self.https:
                conn = http.client.HTTPSConnection(host, port, timeout=self.timeout,
                                                   context=ssl.create_default_context())
                if self.proxy:
                    tunnel = {"Proxy-Authorization": self.proxy.authorization} if self.proxy.authorization else None
                    conn.set_tunnel(self.host, self.port, headers=tunnel)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _reset(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _target(self, query: str) -> str:
        """The request target: origin-form, or absolute-form through a plain HTTP proxy."""
        path = self.path + (f"?{query}" if query else "")
        if self.proxy is not None and not self.https:
            return self._origin + path
        return path

    def _send(self, verb: str, query: str, headers: dict[str, str], body: bytes | None,
              what: str) -> tuple[http.client.HTTPResponse, bytes]:
        if self.proxy is not None and not self.https and self.proxy.authorization:
            headers["Proxy-Authorization"] = self.proxy.authorization
        self._count()
        try:
            conn = self._connection()
            conn.request(verb, self._target(query), body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as err:
            # IncompleteRead (a body cut short) is an HTTPException: the connection broke.
            self._reset()
            raise connection_error(self._name, what, err, self._clean) from None
        return response, data

    def _authorize(self, headers: dict[str, str], verb: str, length: int, md5: str, query: dict[str, str],
                   if_match: str = "") -> None:
        if self.key is not None:
            headers["Authorization"] = self.key.sign(verb, self.path, headers, length, md5, query, if_match)
        elif self.bearer is not None:
            try:
                headers["Authorization"] = self.bearer()
            except TransferError:
                raise
            except Exception as err:  # the credential chain: said as the SDK path says it
                raise PermanentError(self._clean(f"{self._name}: {signin.no_credential_message(err)}"),
                                     reason="signin-needed") from None

    # -- requests ---------------------------------------------------------------------------------

    def put(self, offset: int, data: bytes) -> None:
        """Put Page (update) of ``data`` at ``offset``, with a Content-MD5 the service checks."""
        length = len(data)
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")
        headers = {"x-ms-version": self.api_version, "x-ms-date": email.utils.formatdate(usegmt=True),
                   "x-ms-page-write": "update", "x-ms-range": f"bytes={offset}-{offset + length - 1}",
                   "Content-MD5": md5, "Content-Length": str(length)}
        self._authorize(headers, "PUT", length, md5, {"comp": "page"})
        what = f"writing pages at byte {offset}"
        response, body = self._send("PUT", "comp=page" + (f"&{self.sas}" if self.sas else ""), headers, data, what)
        if response.status != 201:
            raise self._failure(what, response, body)

    def get(self, offset: int, length: int, *, if_match: str | None = None) -> bytes:
        """Get Blob of ``[offset, offset + length)``: one ranged request; a short body is retryable."""
        headers = {"x-ms-version": self.api_version, "x-ms-date": email.utils.formatdate(usegmt=True),
                   "x-ms-range": f"bytes={offset}-{offset + length - 1}"}
        if if_match:
            headers["If-Match"] = if_match
        self._authorize(headers, "GET", 0, "", {}, if_match or "")
        what = f"reading bytes at {offset}"
        response, body = self._send("GET", self.sas, headers, None, what)
        if response.status not in (200, 206):
            raise self._failure(what, response, body)
        if len(body) != length:
            self._reset()
            raise cut_short(self._name, what, len(body), length, self._clean)
        return body

    def _failure(self, what: str, response: http.client.HTTPResponse, body: bytes) -> TransferError:
        text = body[:4096].decode("utf-8", "replace")
        message = re.search(r"<Message>([^<\r\n]*)", text)
        return answer_error(self._name, what, response.status, response.getheader("x-ms-error-code"),
                            reason=response.reason, summary=message.group(1).strip() if message else "",
                            headers=response.headers, detail=signin.authentication_detail(text),
                            explain=self._explain, clean=self._clean)

    def close(self) -> None:
        """Closes this thread's connection; the others close with their threads."""
        self._reset()
