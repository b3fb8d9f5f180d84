"""Azure Storage: authentication and the page-blob target. The only module that imports ``azure.*``.

The SDK is imported lazily inside the functions, so the rest of vhdtool (and this module's pure
helpers, such as :func:`scrub`) works without the ``azure`` extra installed.

Two rules hold for everything that leaves this module:

* **No secrets.** SAS signatures and account keys never appear in a message: every error text goes
  through :func:`scrub`, and blob names are shown without their query string.
* **One retry layer.** The SDK's own retry policy is replaced by a policy that never retries
  (``retry_total=0``) and urllib3's retries are off; :mod:`vhdtool.azure.upload` retries, and needs to
  know which failures are worth it, so SDK errors are translated, by the one classifier of
  :mod:`vhdtool.azure.failures`, into :class:`RetryableError` (timeouts, connection resets, answers
  cut short, 408/429/500/502/503/504) or :class:`PermanentError`.

Two transports, one per kind of request: :mod:`vhdtool.azure.rest` (plain ``http.client``) for
the blob's properties, creation and metadata, the many Put Page requests and the ranged reads,
where the SDK's per-request cost is the bottleneck and its import (about 0.2 s) would be most of
an upload's start-up; and the SDK, made only when first needed, for listings, clearing, resizing,
copies from a URL and Content-MD5. Both reach the blob :mod:`vhdtool.azure.address` finds, with
the same credential and API version.

Signing in (Entra ID tokens, the managed-disk bearer challenge, plain words for refused credentials)
lives in :mod:`vhdtool.azure.signin`; this module asks it.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import ipaddress
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from vhdtool.azure import signin
from vhdtool.azure.address import AddressError, BlobAddress, address_in_account, address_of_url, connection_endpoint
from vhdtool.azure.failures import PermanentError as PermanentError
from vhdtool.azure.failures import RetryableError as RetryableError
from vhdtool.azure.failures import answer_error, connection_error, first_line
from vhdtool.azure.rest import API_VERSION, DirectBlob, token_needs_https
from vhdtool.errors import TransferError, UsageError
from vhdtool.startup import imports_without_gc

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient

T = TypeVar("T")

DEFAULT_TIMEOUT = 120.0  # seconds for a single request to connect and answer (a 4 MiB put on a slow link)
MANAGED_DISK_HOST = re.compile(r"^md-[a-z0-9-]+\.[a-z0-9.-]*blob\.storage\.azure\.net$", re.IGNORECASE)

_SECRET_PATTERNS = [
    # SAS signature in a URL or a connection string's SharedAccessSignature.
    (re.compile(r"(?i)(\bsig=)[^&\s;\"'<>]+"), r"\1REDACTED"),
    (re.compile(r"(?i)(AccountKey=)[^;\s\"'<>]+"), r"\1REDACTED"),
    (re.compile(r"(?i)(SharedAccessSignature=)[^;\s\"'<>]+"), r"\1REDACTED"),
    (re.compile(r"(?i)(Authorization:\s*\S+\s+)\S+"), r"\1REDACTED"),
    # A bearer token (a JWT: base64url header "{"..., payload, signature), wherever it appears.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), "REDACTED"),
]


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with SAS signatures, account keys, bearer tokens and each of ``secrets`` replaced by ``REDACTED``."""
    for secret in secrets:
        if secret and len(secret) >= 8:
            for form in {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}:
                text = text.replace(form, "REDACTED")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def public_url(url: str) -> str:
    """``url`` without its query string and fragment (where a SAS token lives) or user info."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))


def is_managed_disk_url(url: str) -> bool:
    """Whether ``url`` is a managed disk's upload URL (``md-*.blob.storage.azure.net``, from grant-access)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    return bool(MANAGED_DISK_HOST.match(host))


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
        for name in ("AccountKey", "SharedAccessSignature"):
            value = connection_string_field(self.connection_string or "", name)
            if value:
                found.append(value)
                found += urllib.parse.parse_qs(value).get("sig", [])
        return found

    def sas(self) -> signin.SasToken | None:
        """The SAS token this destination carries (in its URL or connection string), if any."""
        if self.url:
            return signin.parse_sas(urllib.parse.urlsplit(self.url).query)
        value = connection_string_field(self.connection_string or "", "SharedAccessSignature")
        return signin.parse_sas(value) if value else None

    def address(self) -> BlobAddress:
        """The blob's URL and credential, as the SDK's ``BlobClient`` would take them from these pieces
        (the account URL's token credential is not part of it); :class:`AddressError` if malformed."""
        if self.url:
            return address_of_url(self.url)
        if self.connection_string is not None:
            endpoint, account, key, sas = connection_endpoint(self.connection_string)
            return address_in_account(endpoint, self.container or "", self.blob or "", account=account, key=key,
                                      sas=sas)
        return address_in_account(self.account_url or "", self.container or "", self.blob or "")

    def describe(self) -> str:
        """A name for messages: the blob URL or ``container/blob``, never a secret."""
        if self.url:
            return public_url(self.url)
        if self.account_url:
            return f"{public_url(self.account_url).rstrip('/')}/{self.container}/{self.blob}"
        endpoint = connection_string_field(self.connection_string or "", "BlobEndpoint")
        prefix = f"{public_url(endpoint).rstrip('/')}/" if endpoint else ""
        return f"{prefix}{self.container}/{self.blob}"


def _azurite_container_url(parts: urllib.parse.SplitResult) -> bool:
    """``http://127.0.0.1:10000/ACCOUNT/CONTAINER``: Azurite's path-style URL of a container, not a blob."""
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host.lower() != "localhost":
            return False
    return parts.path.strip("/").count("/") < 2


def connection_string_field(connection_string: str, name: str) -> str | None:
    """The value of ``name`` (any case) in a ``Key=value;...`` storage connection string, if present."""
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
        if parts.path.strip("/").count("/") < 1 or _azurite_container_url(parts):
            sas = signin.parse_sas(parts.query)
            if sas is not None and sas.resource == "c":
                raise UsageError(f"{public_url(dest)}: this is a container URL with a container SAS (sr=c); give "
                                 "the blob's URL: add /BLOB to the path, before the '?' (the same SAS serves "
                                 "any blob of the container)")
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
    etag: str | None = None


class PageBlobTarget:
    """One page blob, reached through :class:`~vhdtool.azure.rest.DirectBlob` (properties, create,
    metadata, Put Page, ranged reads) and, made on first need, one thread-safe SDK client with
    retries disabled (everything else), both authenticated alike.

    :attr:`requests` counts every HTTP request sent (attempts, not operations); failures come out
    as :class:`RetryableError` or :class:`PermanentError`, scrubbed of secrets.

    A SAS-only request answered with 401 and a bearer challenge (a managed disk whose data access
    needs Entra ID) is sent again once with a token for the challenged resource, and every later
    request carries one too (the SAS stays in the URL).
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
        self._timeout = timeout
        self._pool_size = pool_size
        self._challenge: signin.BearerChallenge | None = None
        self._sas = dest.sas()
        if not _sdk_installed():
            raise UsageError("uploading needs the Azure SDK: pip install 'vhdtool[azure]'")
        # A blob URL without a query and --account-url sign in; SAS URLs and connection strings do not.
        token = (dest.url is not None and not urllib.parse.urlsplit(dest.url).query) or \
            (dest.url is None and dest.connection_string is None)
        self._credential: Any = signin.ScopedCredential(signin.shared_credential()) if token else None
        try:
            self._address = dest.address()
        except AddressError as err:
            raise PermanentError(self._clean(f"{self.name}: {err}")) from None
        self._client: BlobClient | None = None  # the SDK's, made by _sdk() when an operation needs it
        self._direct = DirectBlob.for_address(self._address, bearer=self._bearer(), name=self.name,
                                              timeout=self._timeout, clean=self._clean, count=self._count,
                                              explain=self._refusal, challenged=self._challenged)

    def _bearer(self) -> Callable[[], str] | None:
        return None if self._credential is None else self._credential.bearer

    def _sdk(self) -> BlobClient:
        """The SDK client, made on first use (the SDK's first import, about 0.2 s, is paid then)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._guard("connect", lambda: self._make_client(self._timeout, self._pool_size))
                client = self._client
        return client

    # -- plumbing ---------------------------------------------------------------------------------

    def _make_client(self, timeout: float, pool_size: int) -> BlobClient:
        with imports_without_gc():  # the SDK's first import
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
        options: dict[str, Any] = {"transport": transport, "api_version": API_VERSION,
                                   "retry_total": 0, "retry_to_secondary": False,
                                   "connection_timeout": min(timeout, 30.0), "read_timeout": timeout,
                                   "raw_request_hook": lambda request: self._count()}
        d = self.dest
        if d.url:
            return BlobClient.from_blob_url(d.url, credential=self._credential, **options)
        if d.connection_string:
            return BlobClient.from_connection_string(d.connection_string, d.container or "", d.blob or "",
                                                     **options)
        return BlobClient(d.account_url or "", d.container or "", d.blob or "", credential=self._credential,
                          **options)

    def _count(self, n: int = 1) -> None:
        with self._lock:
            self.requests += n

    def _guard(self, what: str, call: Callable[[], T]) -> T:
        """Run one SDK call, translating its exceptions into ours with secrets scrubbed; a first bearer
        challenge is answered (see the class) and the call sent once more."""
        try:
            return call()
        except TransferError:
            raise
        except Exception as err:  # the SDK raises many types; each is classified below
            if not self._take_challenge(err):
                raise self._translate(what, err) from None
        try:
            return call()
        except TransferError:
            raise
        except Exception as err:
            raise self._translate(what, err) from None

    def _take_challenge(self, err: Exception) -> bool:
        """On a SAS-only request's 401 with a bearer challenge: sign in for the named resource."""
        if getattr(err, "status_code", None) != 401 or self._credential is not None or self._sas is None:
            return False
        headers = getattr(getattr(err, "response", None), "headers", None) or {}
        challenge = signin.parse_challenge(headers.get("WWW-Authenticate"))
        if challenge is None:
            return False
        bearer = self._challenged(challenge)
        if self._direct.bearer is None and self._direct.https:
            self._direct.use_bearer(bearer, challenge)
        return True

    def _challenged(self, challenge: signin.BearerChallenge) -> Callable[[], str]:
        """Sign in for the resource a bearer challenge named (once: later challenges reuse it). The SDK
        client is made again with the token; the direct path takes the token source returned."""
        with self._lock:
            if self._credential is None:
                self._challenge = challenge
                self._credential = signin.ScopedCredential(signin.shared_credential(), challenge.scope,
                                                           challenge.tenant)
                old, self._client = self._client, None
                if old is not None:
                    with contextlib.suppress(Exception):
                        old.close()
            bearer: Callable[[], str] = self._credential.bearer
            return bearer

    def _who(self) -> signin.Credential:
        return signin.Credential(sas=self._sas, bearer=self._credential is not None,
                                 managed_disk=self.managed_disk,
                                 resource=self._challenge.resource if self._challenge else None)

    def _refusal(self, what: str, status: int, code: str | None, detail: str | None) -> PermanentError | None:
        """A 401/403 about the credential, said plainly (see :func:`vhdtool.azure.signin.explain_refusal`)."""
        found = signin.explain_refusal(status, code, detail, what, self._who())
        if found is None:
            return None
        message = self._clean(f"{self.name}: {what}: HTTP {status} {code or ''}".rstrip() + f": {found.text}")
        return PermanentError(message, status, found.reason, found.advice)

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
            return PermanentError(self._clean(f"{where}: {signin.no_credential_message(err, self._challenge)}"),
                                  reason="signin-needed")
        if isinstance(err, (ServiceRequestError, ValueError)) and \
                re.search(r"non-TLS|only supported with HTTPS", str(err)):
            # The SDK refuses to send a bearer token over plain HTTP (as the client is made, or as it sends).
            return token_needs_https(where, self._clean)
        if isinstance(err, DecodeError) or (isinstance(err, HttpResponseError) and err.status_code is None):
            # An answer cut short or garbled on the way: a body that ends before its Content-Length
            # (IncompleteReadError, a DecodeError), one that does not parse, or a failed download
            # without a status. The connection broke; the service did not refuse. Found by the
            # upload soak: a Get Page Ranges answer cut in half stopped the upload for good.
            return RetryableError(self._clean(f"{where}: answer cut short: {first_line(err)}"))
        if isinstance(err, HttpResponseError) and err.status_code is not None:
            error_code = getattr(err, "error_code", None)
            error_code = str(getattr(error_code, "value", error_code) or "") or None  # an enum, or text
            return answer_error(self.name, what, int(err.status_code), error_code,
                                reason=getattr(err, "reason", None), summary=first_line(err),
                                headers=getattr(err.response, "headers", None),
                                detail=signin.authentication_detail(str(err)), explain=self._refusal,
                                clean=self._clean)
        if isinstance(err, (ServiceRequestError, ServiceResponseError, ConnectionError, TimeoutError)):
            return connection_error(self.name, what, err, self._clean)
        if isinstance(err, ValueError):
            return PermanentError(self._clean(f"{where}: {first_line(err)}"))
        return PermanentError(self._clean(f"{where}: {type(err).__name__}: {first_line(err)}"))

    def _clean(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _call(self, what: str, call: Callable[[], T]) -> T:
        return self._guard(what, call)

    # -- operations -------------------------------------------------------------------------------

    def state(self) -> BlobState:
        """Get Blob Properties: whether the blob exists, its size, type and metadata."""
        props = self._direct.properties()
        if props is None:
            return BlobState(exists=False)
        return BlobState(True, props.size, props.blob_type, props.metadata, props.etag)

    def create(self, size: int, metadata: dict[str, str]) -> None:
        """Put Blob: a new (or replacing) page blob of ``size`` bytes, all pages zero."""
        self._direct.create_page_blob(size, metadata)

    def resize(self, size: int) -> None:
        """Set Blob Properties with a new page-blob size."""
        self._call("resizing the page blob", lambda: self._sdk().resize_blob(size))

    def put_pages(self, offset: int, data: bytes) -> None:
        """Put Page (update) of ``data`` at ``offset``, carrying a Content-MD5 the service checks."""
        self._direct.put(offset, data)

    def put_pages_from_url(self, offset: int, length: int, source_url: str, source_offset: int,
                           source_authorization: str | None = None) -> None:
        """Put Page From URL: the service copies ``length`` bytes of ``source_url`` (≤ 4 MiB) to ``offset``.

        The source is authorized by the SAS in ``source_url`` or by ``source_authorization``
        (``Bearer TOKEN``, sent as ``x-ms-copy-source-authorization``); no data crosses this machine.
        """
        kwargs: dict[str, Any] = {}
        if source_authorization:
            kwargs["source_authorization"] = source_authorization
        self._call(f"copying pages at byte {offset} from the source",
                   lambda: self._sdk().upload_pages_from_url(source_url, offset, length, source_offset, **kwargs))

    def clear_pages(self, offset: int, length: int) -> None:
        """Put Page (clear): the range reads as zeros afterwards and is no longer listed."""
        self._call(f"clearing pages at byte {offset}", lambda: self._sdk().clear_page(offset, length))

    def page_ranges(self) -> list[tuple[int, int]]:
        """Get Page Ranges: the written ``(start, end)`` ranges, half-open, in order."""
        def listing() -> list[tuple[int, int]]:
            found: list[tuple[int, int]] = []
            for page in self._sdk().list_page_ranges().by_page():
                for r in page:
                    if not getattr(r, "cleared", False):
                        # The service's end is inclusive.
                        found.append((int(r.start or 0), int(r.end or 0) + 1))
            return found
        return self._guard("listing page ranges", listing)

    def page_ranges_page(self, marker: str | None, *, per_page: int | None = None,
                         etag: str | None = None) -> tuple[list[tuple[int, int]], str | None]:
        """One request of a paged Get Page Ranges: the written ranges it lists and the next marker.

        A fragmented blob lists its ranges in several answers linked by continuation markers;
        taking them one request at a time lets each be retried alone. ``etag`` makes the listing
        conditional (412 if the blob changed).
        """
        from azure.core import MatchConditions

        def one() -> tuple[list[tuple[int, int]], str | None]:
            kwargs: dict[str, Any] = {"results_per_page": per_page}
            if etag:
                kwargs.update(etag=etag, match_condition=MatchConditions.IfNotModified)
            pages = self._sdk().list_page_ranges(**kwargs).by_page(continuation_token=marker)
            page = next(pages)
            found = [(int(r.start or 0), int(r.end or 0) + 1) for r in page if not getattr(r, "cleared", False)]
            return found, getattr(pages, "continuation_token", None) or None
        return self._guard("listing page ranges", one)

    def set_metadata(self, metadata: dict[str, str]) -> None:
        """Set Blob Metadata (replaces all of it)."""
        self._direct.set_metadata(metadata)

    def set_content_md5(self, md5: bytes | None) -> None:
        """Set Blob Properties: the whole blob's Content-MD5 (the service stores it, does not check it);
        ``None`` clears it (a property left unset by Set Blob Properties is cleared)."""
        from azure.storage.blob import ContentSettings

        settings = ContentSettings(content_type="application/octet-stream",
                                   content_md5=None if md5 is None else bytearray(md5))
        self._call("setting the blob's Content-MD5", lambda: self._sdk().set_http_headers(settings))

    def read(self, offset: int, length: int, *, if_match: str | None = None) -> bytes:
        """Get Blob of ``[offset, offset + length)``: one ranged request (``x-ms-range``), not retried here.

        ``if_match`` (an ETag) makes the read conditional: a blob changed since is a 412, not mixed data.

        Sent by :mod:`vhdtool.azure.rest`, not the SDK's ``download_blob`` (which on a page blob also
        lists the page ranges with every read and re-reads a body cut short by itself).
        """
        if length <= 0:
            return b""
        return self._direct.get(offset, length, if_match=if_match)

    def close(self) -> None:
        self._direct.close()
        client = self._client
        if client is not None:
            with contextlib.suppress(Exception):  # closing a session cannot fail the upload
                client.close()


def _sdk_installed() -> bool:
    """Whether the ``azure`` extra is installed, found without importing it."""
    try:
        return importlib.util.find_spec("azure.storage.blob") is not None
    except (ImportError, ValueError):
        return False


def md5_base64(md5: bytes) -> str:
    """The ``Content-MD5`` header form of a digest."""
    return base64.b64encode(md5).decode("ascii")
