"""Azure Storage: authentication and the page-blob target. The only module that imports ``azure.*``.

The SDK is imported lazily inside the functions, so the rest of vhdtool (and this module's pure
helpers, such as :func:`scrub`) works without the ``azure`` extra installed.

Two rules hold for everything that leaves this module:

* **No secrets.** SAS signatures and account keys never appear in a message: every error text goes
  through :func:`scrub`, and blob names are shown without their query string.
* **One retry layer.** The SDK's own retry policy is replaced by a policy that never retries
  (``retry_total=0``) and urllib3's retries are off; :mod:`vhdtool.upload` retries, and needs to
  know which failures are worth it, so SDK errors are translated into :class:`RetryableError`
  (timeouts, connection resets, answers cut short, 408/429/500/502/503/504) or
  :class:`~vhdtool.errors.TransferError`.
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
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import TransferError, UsageError

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
DEFAULT_TIMEOUT = 120.0  # seconds for a single request to connect and answer (a 4 MiB put on a slow link)
MANAGED_DISK_HOST = re.compile(r"^md-[a-z0-9-]+\.[a-z0-9.-]*blob\.storage\.azure\.net$", re.IGNORECASE)

_SECRET_PATTERNS = [
    # SAS signature in a URL or a connection string's SharedAccessSignature.
    (re.compile(r"(?i)(\bsig=)[^&\s;\"'<>]+"), r"\1REDACTED"),
    (re.compile(r"(?i)(AccountKey=)[^;\s\"'<>]+"), r"\1REDACTED"),
    (re.compile(r"(?i)(SharedAccessSignature=)[^;\s\"'<>]+"), r"\1REDACTED"),
    (re.compile(r"(?i)(Authorization:\s*\S+\s+)\S+"), r"\1REDACTED"),
]


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with SAS signatures, account keys and each of ``secrets`` replaced by ``REDACTED``."""
    for secret in secrets:
        if secret and len(secret) >= 8:
            for form in {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}:
                text = text.replace(form, "REDACTED")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def public_url(url: str) -> str:
    """A blob URL without its query string (where a SAS token lives)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def is_managed_disk_url(url: str) -> bool:
    """Whether ``url`` is a managed disk's upload URL (``md-*.blob.storage.azure.net``, from grant-access)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    return bool(MANAGED_DISK_HOST.match(host))


class RetryableError(TransferError):
    """A failure worth retrying: a timeout, a dropped connection, or a 408/429/5xx answer."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class PermanentError(TransferError):
    """A failure that retrying cannot fix (403, 404, 409, 412, bad request): the upload stops at once."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Destination:
    """Where to upload, in one of three forms.

    * ``url``: a blob URL, with a SAS token (also a managed disk's ``grant-access`` URL) or, without
      one, authenticated with ``DefaultAzureCredential``;
    * ``connection_string`` + ``container`` + ``blob`` (Azurite, account keys, SAS connection strings);
    * ``account_url`` + ``container`` + ``blob`` with ``DefaultAzureCredential``.
    """

    url: str | None = None
    connection_string: str | None = None
    account_url: str | None = None
    container: str | None = None
    blob: str | None = None

    def secrets(self) -> list[str]:
        """The secret parts of this destination, to be scrubbed from any text shown."""
        found: list[str] = []
        if self.url:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.url).query)
            found += query.get("sig", [])
        if self.connection_string:
            for part in self.connection_string.split(";"):
                key, _, value = part.partition("=")
                if key.strip().lower() in ("accountkey", "sharedaccesssignature") and value:
                    found.append(value.strip())
                    found += urllib.parse.parse_qs(value).get("sig", [])
        return found

    def describe(self) -> str:
        """A name for messages: the blob URL or ``container/blob``, never a secret."""
        if self.url:
            return public_url(self.url)
        if self.account_url:
            return f"{public_url(self.account_url).rstrip('/')}/{self.container}/{self.blob}"
        endpoint = _connection_string_field(self.connection_string or "", "BlobEndpoint")
        prefix = f"{public_url(endpoint).rstrip('/')}/" if endpoint else ""
        return f"{prefix}{self.container}/{self.blob}"


def _connection_string_field(connection_string: str, name: str) -> str | None:
    for part in connection_string.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def make_destination(dest: str | None, *, connection_string: str | None = None,
                     account_url: str | None = None, container: str | None = None,
                     blob: str | None = None) -> Destination:
    """Build a :class:`Destination` from the command line's pieces.

    ``dest`` is a blob URL (``https://...``, SAS optional) or ``CONTAINER/BLOB`` (with
    ``connection_string`` or ``account_url``); ``container``/``blob`` may be given separately.
    """
    if dest and re.match(r"(?i)^https?://", dest):
        if container or blob:
            raise UsageError("give either a blob URL or --container/--blob, not both")
        parts = urllib.parse.urlsplit(dest)
        if parts.path.strip("/").count("/") < 1:
            raise UsageError(f"{public_url(dest)}: a blob URL needs a container and a blob name")
        return Destination(url=dest)
    if dest:
        if container or blob:
            raise UsageError("give either CONTAINER/BLOB or --container/--blob, not both")
        container, sep, blob = dest.partition("/")
        if not sep:
            raise UsageError(f"destination {scrub(dest)!r} is neither a blob URL nor CONTAINER/BLOB")
    if not container or not blob:
        raise UsageError("no destination: give a blob URL (with a SAS token), or CONTAINER/BLOB "
                         "(or --container and --blob) with --connection-string or --account-url")
    if connection_string and not account_url:
        return Destination(connection_string=connection_string, container=container, blob=blob)
    if account_url:
        return Destination(account_url=account_url, container=container, blob=blob)
    raise UsageError("CONTAINER/BLOB needs --connection-string (or AZURE_STORAGE_CONNECTION_STRING) "
                     "or --account-url")


@dataclass(frozen=True)
class BlobState:
    """What the service says about the target blob before an upload."""

    exists: bool
    size: int = 0
    blob_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date) or ``x-ms-retry-after-ms``."""
    if headers is None:
        return None
    millis = headers.get("x-ms-retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class PageBlobTarget:
    """One page blob, reached through one thread-safe SDK client with retries disabled.

    :attr:`requests` counts every HTTP request sent (attempts, not operations); failures come out
    as :class:`RetryableError` or :class:`PermanentError`, scrubbed of secrets.
    """

    def __init__(self, dest: Destination, *, timeout: float = DEFAULT_TIMEOUT, pool_size: int = 16,
                 managed_disk: bool | None = None) -> None:
        self.dest = dest
        self.name = dest.describe()
        self._secrets = dest.secrets()
        self.managed_disk = (is_managed_disk_url(dest.url) if dest.url else False) \
            if managed_disk is None else managed_disk
        self._lock = threading.Lock()
        self.requests = 0
        try:
            import azure.storage.blob  # noqa: F401
        except ImportError as err:
            raise UsageError("uploading needs the Azure SDK: pip install 'vhdtool[azure]'") from err
        self._client = self._guard("connect", lambda: self._make_client(timeout, pool_size))
        self._fast = _FastPutPage.for_client(self._client, timeout, self._clean, self.name, self._count)

    # -- plumbing ---------------------------------------------------------------------------------

    def _make_client(self, timeout: float, pool_size: int) -> BlobClient:
        import requests
        from azure.core.pipeline.transport import RequestsTransport
        from azure.storage.blob import BlobClient
        from urllib3.util.retry import Retry

        session = requests.Session()
        # urllib3 must not retry either: ours is the only retry layer.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(4, pool_size),
                                                max_retries=Retry(total=False, redirect=False,
                                                                  raise_on_status=False))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        transport = RequestsTransport(session=session, session_owner=True,
                                      connection_timeout=min(timeout, 30.0), read_timeout=timeout)
        # Every HTTP request the SDK sends passes this hook (downloads and listings may send several).
        options: dict[str, Any] = {"transport": transport, "retry_total": 0, "retry_to_secondary": False,
                                   "connection_timeout": min(timeout, 30.0), "read_timeout": timeout,
                                   "raw_request_hook": lambda request: self._count()}
        d = self.dest
        if d.url:
            parts = urllib.parse.urlsplit(d.url)
            credential = None if parts.query else _default_credential()
            return BlobClient.from_blob_url(d.url, credential=credential, **options)
        if d.connection_string:
            return BlobClient.from_connection_string(d.connection_string, d.container or "", d.blob or "",
                                                     **options)
        return BlobClient(d.account_url or "", d.container or "", d.blob or "",
                          credential=_default_credential(), **options)

    def _count(self, n: int = 1) -> None:
        with self._lock:
            self.requests += n

    def _guard(self, what: str, call: Callable[[], T]) -> T:
        """Run one SDK call, translating its exceptions into ours with secrets scrubbed."""
        try:
            return call()
        except TransferError:
            raise
        except Exception as err:  # the SDK raises many types; each is classified below
            raise self._translate(what, err) from None

    def _translate(self, what: str, err: Exception) -> TransferError:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            DecodeError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        where = f"{self.name}: {what}"
        if isinstance(err, ClientAuthenticationError) and getattr(err, "status_code", None) is None:
            # No HTTP answer: the credential chain found nothing usable.
            return PermanentError(self._clean(f"{where}: no usable Azure credential ({_first_line(err)}); "
                                              "use a SAS URL, a connection string or `az login`"))
        if isinstance(err, DecodeError) or (isinstance(err, HttpResponseError) and err.status_code is None):
            # An answer cut short or garbled on the way: a body that ends before its Content-Length
            # (IncompleteReadError, a DecodeError), one that does not parse, or a failed download
            # without a status. The connection broke; the service did not refuse. Found by the
            # upload soak: a Get Page Ranges answer cut in half stopped the upload for good.
            return RetryableError(self._clean(f"{where}: answer cut short: {_first_line(err)}"))
        if isinstance(err, HttpResponseError) and err.status_code is not None:
            status = int(err.status_code)
            code = getattr(err, "error_code", None) or getattr(err, "reason", None) or ""
            message = self._clean(f"{where}: HTTP {status} {code}: {_first_line(err)}")
            if status in RETRYABLE_STATUS:
                headers = getattr(err.response, "headers", None)
                return RetryableError(message, status, _retry_after(headers))
            return PermanentError(message + _hint(status), status)
        if isinstance(err, (ServiceRequestError, ServiceResponseError, ConnectionError, TimeoutError)):
            return RetryableError(self._clean(f"{where}: connection failed: {_first_line(err)}"))
        if isinstance(err, ValueError):
            return PermanentError(self._clean(f"{where}: {_first_line(err)}"))
        return PermanentError(self._clean(f"{where}: {type(err).__name__}: {_first_line(err)}"))

    def _clean(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _call(self, what: str, call: Callable[[], T]) -> T:
        return self._guard(what, call)

    # -- operations -------------------------------------------------------------------------------

    def state(self) -> BlobState:
        """Get Blob Properties: whether the blob exists, its size, type and metadata."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self._client.get_blob_properties()
        except ResourceNotFoundError:
            return BlobState(exists=False)
        except Exception as err:
            raise self._translate("reading blob properties", err) from None
        if props.size is None or props.blob_type is None:
            # http.client takes a connection closed inside the header block for the end of the
            # headers, so an answer cut short arrives as a 200 without Content-Length or
            # x-ms-blob-type (found by the upload soak: int(None) crashed the upload).
            raise RetryableError(self._clean(f"{self.name}: reading blob properties: answer cut short "
                                             "(no size or blob type)"))
        blob_type = str(getattr(props.blob_type, "value", props.blob_type))
        return BlobState(True, int(props.size), blob_type, dict(props.metadata or {}))

    def create(self, size: int, metadata: dict[str, str]) -> None:
        """Put Blob: a new (or replacing) page blob of ``size`` bytes, all pages zero."""
        self._call("creating the page blob", lambda: self._client.create_page_blob(size, metadata=metadata))

    def resize(self, size: int) -> None:
        """Set Blob Properties with a new page-blob size."""
        self._call("resizing the page blob", lambda: self._client.resize_blob(size))

    def put_pages(self, offset: int, data: bytes) -> None:
        """Put Page (update) of ``data`` at ``offset``, carrying a Content-MD5 the service checks."""
        if self._fast is not None:
            self._fast.put(offset, data)
            return
        self._call(f"writing pages at byte {offset}",
                   lambda: self._client.upload_page(data, offset, len(data), validate_content=True))

    def clear_pages(self, offset: int, length: int) -> None:
        """Put Page (clear): the range reads as zeros afterwards and is no longer listed."""
        self._call(f"clearing pages at byte {offset}", lambda: self._client.clear_page(offset, length))

    def page_ranges(self) -> list[tuple[int, int]]:
        """Get Page Ranges: the written ``(start, end)`` ranges, half-open, in order."""
        def listing() -> list[tuple[int, int]]:
            found: list[tuple[int, int]] = []
            for page in self._client.list_page_ranges().by_page():
                for r in page:
                    if not getattr(r, "cleared", False):
                        # The service's end is inclusive.
                        found.append((int(r.start or 0), int(r.end or 0) + 1))
            return found
        return self._guard("listing page ranges", listing)

    def set_metadata(self, metadata: dict[str, str]) -> None:
        """Set Blob Metadata (replaces all of it)."""
        self._call("setting blob metadata", lambda: self._client.set_blob_metadata(metadata))

    def set_content_md5(self, md5: bytes | None) -> None:
        """Set Blob Properties: the whole blob's Content-MD5 (the service stores it, does not check it);
        ``None`` clears it (a property left unset by Set Blob Properties is cleared)."""
        from azure.storage.blob import ContentSettings

        settings = ContentSettings(content_type="application/octet-stream",
                                   content_md5=None if md5 is None else bytearray(md5))
        self._call("setting the blob's Content-MD5", lambda: self._client.set_http_headers(settings))

    def content_md5(self) -> bytes | None:
        """The blob's stored Content-MD5 property, if any."""
        props = self._call("reading blob properties", self._client.get_blob_properties)
        value = props.content_settings.content_md5
        return bytes(value) if value else None

    def read(self, offset: int, length: int) -> bytes:
        """Get Blob of ``[offset, offset + length)``: one ranged request (``x-ms-range``), not retried here.

        Not the SDK's ``download_blob``: on a page blob that also sends a Get Page Ranges for the whole
        blob with every read (ignoring its failure) and re-reads a body cut short by itself after a
        1 s sleep, a second retry layer hidden under ours. The direct HTTP path is used where Put
        Page uses it; otherwise the request goes through the client's own pipeline (its
        authentication, no retry policy) as a plain ranged Get Blob.
        """
        if length <= 0:
            return b""
        if self._fast is not None:
            return self._fast.get(offset, length)
        return self._guard(f"reading bytes at {offset}", lambda: self._pipeline_read(offset, length))

    def _pipeline_read(self, offset: int, length: int) -> bytes:
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest

        headers = {"x-ms-range": f"bytes={offset}-{offset + length - 1}",
                   "x-ms-version": str(self._client.api_version)}
        # stream=True, as the SDK's own downloads: the response policies leave the body alone (with
        # stream=False they try to decode the disk's bytes as text), and a body cut short comes out of
        # stream_download as an IncompleteReadError (retryable), not a bare urllib3 error.
        pipeline = getattr(self._client, "_pipeline", None)  # not public API: fall back if an SDK lacks it
        if pipeline is None:  # the SDK's own download: the same bytes, plus a page listing per read
            return bytes(self._client.download_blob(offset=offset, length=length, validate_content=False).readall())
        response = pipeline.run(HttpRequest("GET", self._client.url, headers=headers), stream=True).http_response
        try:
            if response.status_code not in (200, 206):
                response.read()
                raise HttpResponseError(response=response)
            body = b"".join(response.stream_download(pipeline))
        finally:
            response.close()
        if len(body) != length:
            raise RetryableError(self._clean(f"{self.name}: reading bytes at {offset}: answer cut short "
                                             f"({len(body)} of {length} bytes)"))
        return bytes(body)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a session cannot fail the upload
            self._client.close()


class _FastPutPage:
    """Put Page (and ranged Get Blob for ``--verify=full``) over plain ``http.client`` connections (one
    per thread), signed like the SDK signs.

    Uploads are many Put Page requests; the SDK's pipeline costs about 1.5 ms of Python per request
    (measured against Azurite: 1,600 puts of 64 KiB took 5.3 s through the SDK, 2.1 s this way),
    which on small scattered runs is the bottleneck. Used for SAS URLs and account keys (REST
    "Authorize with Shared Key"), and only without an HTTP proxy in the environment; every other
    case (tokens from DefaultAzureCredential, proxies) keeps the SDK path. Errors are classified as
    for the SDK: 408/429/5xx and connection failures are retryable, the rest permanent.
    """

    def __init__(self, url: str, api_version: str, timeout: float, clean: Callable[[str], str], name: str,
                 count: Callable[[], None], account: str | None = None, key: bytes | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        self.https = parts.scheme.lower() == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self.path = parts.path
        self.sas = parts.query
        self.api_version = api_version
        self.timeout = timeout
        self.account = account
        self.key = key
        self._clean = clean
        self._name = name
        self._count = count
        self._local = threading.local()

    @classmethod
    def for_client(cls, client: Any, timeout: float, clean: Callable[[str], str], name: str,
                   count: Callable[[], None]) -> _FastPutPage | None:
        try:
            url = str(client.url)
            api_version = str(client.api_version)
            credential = client.credential
            host = urllib.parse.urlsplit(url).hostname or ""
        except Exception:  # an SDK without these public attributes: keep its own path
            return None
        if urllib.request.getproxies() and not urllib.request.proxy_bypass(host):
            return None
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        if "sig" in query and credential is None:
            return cls(url, api_version, timeout, clean, name, count)
        account = getattr(credential, "account_name", None)
        key = getattr(credential, "account_key", None)
        if isinstance(account, str) and isinstance(key, str) and not query:
            try:
                return cls(url, api_version, timeout, clean, name, count, account, base64.b64decode(key))
            except ValueError:
                return None
        return None

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self.https:
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                   context=ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _reset(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _sign(self, verb: str, headers: dict[str, str], length: int, md5: str, query: dict[str, str]) -> str:
        # Authorize with Shared Key: VERB, then 11 standard headers (Content-Length empty when 0),
        # then the x-ms-* headers sorted, then /account/path and the sorted query parameters.
        assert self.account is not None and self.key is not None
        standard = [verb, "", "", str(length) if length else "", md5, "", "", "", "", "", "", ""]
        ms_headers = sorted((k.lower(), v.strip()) for k, v in headers.items() if k.lower().startswith("x-ms-"))
        resource = f"/{self.account}{self.path}" + "".join(f"\n{k.lower()}:{v}" for k, v in sorted(query.items()))
        text = "\n".join(standard) + "\n" + "".join(f"{k}:{v}\n" for k, v in ms_headers) + resource
        digest = hmac.new(self.key, text.encode("utf-8"), hashlib.sha256).digest()
        return f"SharedKey {self.account}:{base64.b64encode(digest).decode('ascii')}"

    def put(self, offset: int, data: bytes) -> None:
        length = len(data)
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")
        headers = {"x-ms-version": self.api_version, "x-ms-date": email.utils.formatdate(usegmt=True),
                   "x-ms-page-write": "update", "x-ms-range": f"bytes={offset}-{offset + length - 1}",
                   "Content-MD5": md5, "Content-Length": str(length)}
        target = f"{self.path}?comp=page" + (f"&{self.sas}" if self.sas else "")
        if self.key is not None:
            headers["Authorization"] = self._sign("PUT", headers, length, md5, {"comp": "page"})
        what = f"{self._name}: writing pages at byte {offset}"
        self._count()
        try:
            conn = self._connection()
            conn.request("PUT", target, body=data, headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as err:
            self._reset()
            raise RetryableError(self._clean(f"{what}: connection failed: {type(err).__name__}: {err}")) from None
        if response.status == 201:
            return
        raise self._failure(what, response)

    def get(self, offset: int, length: int) -> bytes:
        """Get Blob of ``[offset, offset + length)``: one ranged request; a short body is retryable."""
        headers = {"x-ms-version": self.api_version, "x-ms-date": email.utils.formatdate(usegmt=True),
                   "x-ms-range": f"bytes={offset}-{offset + length - 1}"}
        target = self.path + (f"?{self.sas}" if self.sas else "")
        if self.key is not None:
            headers["Authorization"] = self._sign("GET", headers, 0, "", {})
        what = f"{self._name}: reading bytes at {offset}"
        self._count()
        try:
            conn = self._connection()
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as err:
            # IncompleteRead (a body cut short) is an HTTPException: the connection broke.
            self._reset()
            raise RetryableError(self._clean(f"{what}: connection failed: {type(err).__name__}: {err}")) from None
        if response.status not in (200, 206):
            raise self._failure(what, response)
        if len(body) != length:
            self._reset()
            raise RetryableError(self._clean(f"{what}: answer cut short ({len(body)} of {length} bytes)"))
        return body

    def _failure(self, what: str, response: http.client.HTTPResponse) -> TransferError:
        code = response.getheader("x-ms-error-code") or response.reason
        message = self._clean(f"{what}: HTTP {response.status} {code}")
        if response.status in RETRYABLE_STATUS:
            return RetryableError(message, response.status, _retry_after(response.headers))
        return PermanentError(message + _hint(response.status), response.status)


def _default_credential() -> Any:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _hint(status: int) -> str:
    if status == 403:
        return " (check the SAS token's permissions and expiry, or the credential's role on the container)"
    if status == 404:
        return " (does the container exist?)"
    if status == 409:
        return " (the blob is in a conflicting state, e.g. leased, or is not a page blob)"
    return ""


def md5_base64(md5: bytes) -> str:
    """The ``Content-MD5`` header form of a digest."""
    return base64.b64encode(md5).decode("ascii")
