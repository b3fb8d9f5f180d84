"""Signing in to Azure Storage: Microsoft Entra ID tokens, bearer challenges, and refusals said plainly.

Three jobs, all about credentials and none about data, kept out of :mod:`vhdtool.azure.storage` so that
module stays about the page blob:

* :class:`TokenCache` sits between the SDK (and the direct Put Page path) and
  ``DefaultAzureCredential``: one token per scope, fetched again only shortly before it expires.
  Left to themselves the layers under it fetch a token on *every* request once a token has less
  than five minutes left (azure-core's refresh window, MSAL's "about to expire" rule), so a
  short-lived token would cost one identity request per Put Page. One cache is shared per
  environment, so ``prepare`` with several disks signs in once.
* :class:`BearerChallenge`: a managed disk whose data access needs Microsoft Entra ID answers a
  SAS-only request with 401 and ``WWW-Authenticate: Bearer authorization_uri=... resource_id=
  https://disk.azure.com/``; the token must then be asked for that resource (scope
  ``https://disk.azure.com//.default``: the service wants the trailing slash kept).
* :func:`explain_refusal`: a 401/403 becomes one line that names what is missing (the SAS's expiry
  from ``se=``, the permission letter, the SAS kind, the RBAC role), never the token. Azurite and
  Azure report some of these differently (an expired SAS is ``AuthorizationFailure`` in Azurite,
  ``AuthenticationFailed`` "Signature not valid in the specified time frame" in Azure), so the
  verdict rests on the token's own fields and the error code, not on the service's prose.

The Azure SDK is imported lazily, as in :mod:`vhdtool.azure.storage`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vhdtool.startup import imports_without_gc

STORAGE_SCOPE = "https://storage.azure.com/.default"
REFRESH_WINDOW = 300.0  # seconds before expiry a long-lived token is replaced
RETRY_REFRESH_AFTER = 30.0  # seconds between attempts to replace a token whose refresh failed
CONTRIBUTOR_ROLE = "Storage Blob Data Contributor"
DISK_ROLE = "Data Operator for Managed Disks"
# Error codes of a refused credential (REST "Common error codes" and Azurite's).
AUTH_FAILED = frozenset({"AuthenticationFailed", "AuthorizationFailure", "InvalidAuthenticationInfo",
                         "NoAuthenticationInformation"})


# ---------------------------------------------------------------- what a SAS token says about itself

PERMISSION_NAMES = {"r": "read", "a": "add", "c": "create", "w": "write", "d": "delete", "x": "delete version",
                    "y": "permanent delete", "l": "list", "t": "tags", "f": "find", "m": "move", "e": "execute",
                    "o": "ownership", "p": "permissions", "i": "set immutability policy"}
# What each operation of vhdtool needs from a SAS, keyed by the first word of its description
# ("writing pages at byte N"). Any one of the letters will do.
NEEDED_PERMISSIONS = {"reading": "r", "listing": "r", "creating": "cw", "writing": "w", "clearing": "w",
                      "resizing": "w", "setting": "w", "copying": "w"}


@dataclass(frozen=True)
class SasToken:
    """The readable fields of a SAS token's query (``sig`` is never kept)."""

    version: str | None = None
    resource: str | None = None  # sr: b blob, c container, bs/bv snapshot/version, d directory
    permissions: str | None = None  # sp
    start: dt.datetime | None = None  # st
    expiry: dt.datetime | None = None  # se
    expiry_text: str | None = None  # se as written in the token
    policy: str | None = None  # si: a stored access policy (a managed disk's grant-access SAS has one)
    services: str | None = None  # ss: an account SAS
    resource_types: str | None = None  # srt: an account SAS
    protocol: str | None = None  # spr
    ip: str | None = None  # sip
    delegation_expiry: str | None = None  # ske: a user delegation SAS's key expiry

    @property
    def kind(self) -> str:
        if self.services or self.resource_types:
            return "account SAS"
        if self.delegation_expiry:
            return "user delegation SAS"
        return {"b": "blob SAS (sr=b)", "c": "container SAS (sr=c)", "bs": "blob snapshot SAS (sr=bs)",
                "bv": "blob version SAS (sr=bv)", "d": "directory SAS (sr=d)"}.get(self.resource or "", "SAS")


def parse_sas(query: str) -> SasToken | None:
    """The SAS in a URL query or connection string's ``SharedAccessSignature``; ``None`` without ``sig``."""
    fields = dict(urllib.parse.parse_qsl(query.lstrip("?"), keep_blank_values=True))
    if "sig" not in fields:
        return None
    return SasToken(version=fields.get("sv"), resource=fields.get("sr"), permissions=fields.get("sp"),
                    start=_sas_time(fields.get("st")), expiry=_sas_time(fields.get("se")),
                    expiry_text=fields.get("se"), policy=fields.get("si"), services=fields.get("ss"),
                    resource_types=fields.get("srt"), protocol=fields.get("spr"), ip=fields.get("sip"),
                    delegation_expiry=fields.get("ske"))


def _sas_time(value: str | None) -> dt.datetime | None:
    """An ISO 8601 UTC time as SAS tokens write them (``2025-01-31``, ``...T12:00Z``, ``...T12:00:00.1234567Z``)."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)  # .NET writes 7 fractional digits
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _utc(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _letters(letters: str) -> str:
    """``"rw"`` -> ``"r (read), w (write)"``."""
    return ", ".join(f"{p} ({PERMISSION_NAMES.get(p, '?')})" for p in letters) or "nothing"


# ---------------------------------------------------------------- a bearer challenge

@dataclass(frozen=True)
class BearerChallenge:
    """``WWW-Authenticate: Bearer authorization_uri=https://login.microsoftonline.com/TENANT/... resource_id=R``."""

    resource: str
    tenant: str | None = None

    @property
    def scope(self) -> str:
        # resource + "/.default", the trailing slash of "https://disk.azure.com/" kept (as AzCopy and
        # the SDK's own challenge policy do: the disk service checks the audience literally).
        return self.resource + "/.default"


def parse_challenge(header: str | None) -> BearerChallenge | None:
    """The Bearer challenge in a ``WWW-Authenticate`` header, if it names a resource."""
    if not header or not header.strip().lower().startswith("bearer"):
        return None
    params = dict((k.lower(), v) for k, v in re.findall(r'([A-Za-z_]+)\s*=\s*"?([^",\s]+)"?', header))
    resource = params.get("resource_id") or params.get("resource")
    if not resource:
        return None
    authority = urllib.parse.urlsplit(params.get("authorization_uri", ""))
    tenant = authority.path.strip("/").split("/")[0] if authority.path.strip("/") else None
    return BearerChallenge(resource, tenant or None)


# ---------------------------------------------------------------- tokens

@dataclass
class _Held:
    token: str
    expires_on: float
    use_until: float  # when to fetch the next one (before expiry)
    next_try: float = 0.0  # after a failed refresh: when to try again


class TokenCache:
    """A token credential in front of another: one token per scope, replaced only shortly before it
    expires (five minutes before, or half-way through a token shorter than ten minutes).

    To the SDK it reports the time it will replace a token as that token's expiry, so azure-core asks
    again only then (the question is cheap; the cache answers it). :attr:`fetches` counts the tokens
    obtained from the credential behind it. If a refresh fails while the old token is still valid,
    the old one is used and the refresh retried later.
    """

    def __init__(self, credential: Any, clock: Callable[[], float] = time.time) -> None:
        self._credential = credential
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str | None], _Held] = {}
        self.fetches = 0

    def token(self, scope: str, tenant: str | None = None, claims: str | None = None) -> _Held:
        """A valid token for ``scope``, from the cache unless it is due for replacement."""
        with self._lock:
            now = self._clock()
            held = self._held.get((scope, tenant))
            if held is not None and claims is None and (now < held.use_until or now < held.next_try) \
                    and now < held.expires_on - 1:
                return held
            try:
                fresh = self._fetch(scope, tenant, claims, now)
            except Exception:
                if held is not None and claims is None and now < held.expires_on - 1:
                    held.next_try = now + min(RETRY_REFRESH_AFTER, (held.expires_on - now) / 2)
                    return held
                raise
            self._held[(scope, tenant)] = fresh
            return fresh

    def _fetch(self, scope: str, tenant: str | None, claims: str | None, now: float) -> _Held:
        options: dict[str, Any] = {}
        if tenant:
            options["tenant_id"] = tenant
        if claims:
            options["claims"] = claims
        if hasattr(self._credential, "get_token_info"):
            info = self._credential.get_token_info(scope, options=options or None)
            token, expires_on = str(info.token), float(info.expires_on)
            refresh_on = getattr(info, "refresh_on", None)
        else:
            access = self._credential.get_token(scope, tenant_id=tenant, claims=claims)
            token, expires_on, refresh_on = str(access.token), float(access.expires_on), None
        self.fetches += 1
        lifetime = max(0.0, expires_on - now)
        use_until = expires_on - min(REFRESH_WINDOW, lifetime / 2)
        if refresh_on:
            use_until = min(use_until, float(refresh_on))
        return _Held(token, expires_on, max(now, use_until))

    # -- the azure-core TokenCredential protocols ------------------------------------------------

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        held = self.token(_one(scopes), tenant_id, claims)
        return AccessToken(held.token, int(held.use_until))

    def get_token_info(self, *scopes: str, options: dict[str, Any] | None = None) -> Any:
        from azure.core.credentials import AccessTokenInfo

        options = options or {}
        held = self.token(_one(scopes), options.get("tenant_id"), options.get("claims"))
        return AccessTokenInfo(held.token, int(held.use_until))

    def close(self) -> None:
        """The credential is shared for the process: closing one client leaves it open."""


class ScopedCredential:
    """A view of a :class:`TokenCache` that answers requests for Storage's default scope with a token
    for ``challenge.scope`` instead (the resource a bearer challenge named), other scopes as asked."""

    def __init__(self, cache: TokenCache, scope: str = STORAGE_SCOPE, tenant: str | None = None) -> None:
        self.cache = cache
        self.scope = scope
        self.tenant = tenant

    def _map(self, scopes: tuple[str, ...]) -> str:
        scope = _one(scopes)
        return self.scope if scope == STORAGE_SCOPE else scope

    def bearer(self) -> str:
        """The ``Authorization`` header value for a request sent outside the SDK."""
        return f"Bearer {self.cache.token(self.scope, self.tenant).token}"

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  **kwargs: Any) -> Any:
        return self.cache.get_token(self._map(scopes), claims=claims, tenant_id=tenant_id or self.tenant)

    def get_token_info(self, *scopes: str, options: dict[str, Any] | None = None) -> Any:
        options = dict(options or {})
        if self.tenant:
            options.setdefault("tenant_id", self.tenant)
        return self.cache.get_token_info(self._map(scopes), options=options)

    def close(self) -> None:
        """Shared: nothing to close."""


def _one(scopes: tuple[str, ...]) -> str:
    if len(scopes) != 1:
        raise ValueError("one scope per token request")
    return scopes[0]


_SHARED: dict[tuple[tuple[str, str], ...], TokenCache] = {}
_SHARED_LOCK = threading.Lock()
# What DefaultAzureCredential reads from the environment (so a changed environment gets its own cache).
_IDENTITY_ENV = ("AZURE_", "IDENTITY_", "MSI_", "IMDS_", "SYSTEM_ACCESSTOKEN")


def shared_credential() -> TokenCache:
    """The process's ``DefaultAzureCredential`` behind a :class:`TokenCache`, one per sign-in environment."""
    key = tuple(sorted((k, v) for k, v in os.environ.items()
                       if k.startswith(_IDENTITY_ENV) and k != "AZURE_STORAGE_CONNECTION_STRING"))
    with _SHARED_LOCK:
        cache = _SHARED.get(key)
        if cache is None:
            with imports_without_gc():
                from azure.identity import DefaultAzureCredential

            cache = TokenCache(DefaultAzureCredential(exclude_interactive_browser_credential=True))
            _SHARED[key] = cache
        return cache


def no_credential_message(err: BaseException, challenge: BearerChallenge | None = None) -> str:
    """One line for a credential chain that found nothing: which sign-ins were tried, what to do."""
    text = str(err)
    tried = re.findall(r"^\s+([A-Za-z]+Credential):", text, re.MULTILINE)
    if tried:
        found = "tried " + ", ".join(name.removesuffix("Credential") for name in tried)
    else:
        found = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    if challenge is not None:
        return (f"the service asks for a Microsoft Entra ID token for {challenge.resource} (a managed disk "
                f"whose data access needs Entra ID) and no sign-in worked ({found}); sign in with `az login` "
                f"or a managed identity that has the role {DISK_ROLE} on the disk")
    return (f"no usable Microsoft Entra ID sign-in ({found}); sign in with `az login` or a managed identity "
            f"with the role {CONTRIBUTOR_ROLE}, or use a SAS URL or a connection string")


# ---------------------------------------------------------------- refusals said plainly

@dataclass(frozen=True)
class Refusal:
    """Why the service refused: ``text`` for the user, ``reason`` for callers that add advice."""

    text: str
    reason: str
    advice: str | None = None


@dataclass(frozen=True)
class Credential:
    """What a request carried: a SAS token, an Entra ID token (and for which resource), a managed disk."""

    sas: SasToken | None = None
    bearer: bool = False
    managed_disk: bool = False
    resource: str | None = None  # a challenged resource the token was for


def explain_refusal(status: int, code: str | None, detail: str | None, what: str, credential: Credential,
                    now: dt.datetime | None = None) -> Refusal | None:
    """One plain line for a 401/403 about the credential, or ``None`` if it is about something else."""
    if status not in (401, 403):
        return None
    code = code or ""
    detail = (detail or "").strip()
    now = now or dt.datetime.now(dt.timezone.utc)
    sas = credential.sas
    if credential.bearer and credential.resource and code == "AuthorizationPermissionMismatch":
        # Challenged for a token on top of the SAS (an Entra ID disk): the token's identity is the
        # likelier culprit; a grant-access SAS for reading cannot write either.
        found = _explain_bearer(code, detail, what, credential)
        needs_write = "r" not in NEEDED_PERMISSIONS.get(what.split(" ", 1)[0], "r")
        if found is not None and needs_write and sas is not None and "w" not in (sas.permissions or ""):
            found = Refusal(found.text + "; or the SAS is for reading only (`az disk grant-access --access-level "
                            "Write` gives one for uploads)", found.reason)
        return found
    if sas is not None:
        found = _explain_sas(sas, code, detail, what, credential.managed_disk, now)
        if found is not None:
            return found
    if credential.bearer:
        return _explain_bearer(code, detail, what, credential)
    if status == 401 and code in ("NoAuthenticationInformation", ""):
        return Refusal("the service needs a credential and none was sent: give a SAS URL or a connection "
                       "string, or sign in (`az login`) and use --account-url", "no-credential")
    return None


def _explain_sas(sas: SasToken, code: str, detail: str, what: str, managed_disk: bool,
                 now: dt.datetime) -> Refusal | None:
    time_frame = "time frame" in detail.lower()
    if code in AUTH_FAILED and sas.start is not None and now < sas.start:
        return Refusal(f"the SAS token is not valid before {_utc(sas.start)} (st=); wait, or make one that starts "
                       "earlier (is this machine's clock right?)", "sas-not-yet-valid")
    if code in AUTH_FAILED and sas.expiry is not None and (now >= sas.expiry or time_frame):
        return Refusal(f"the SAS token expired at {_utc(sas.expiry)} (se={sas.expiry_text})", "sas-expired",
                       "rerun with a fresh SAS")
    if code == "AuthorizationPermissionMismatch":
        verb = what.split(" ", 1)[0]
        needed = NEEDED_PERMISSIONS.get(verb)
        wants = (" or ".join(_letters(p) for p in needed)) if needed else "a permission it lacks"
        if sas.permissions is not None:
            grants = f"grants only {_letters(sas.permissions)} (sp={sas.permissions})"
        elif sas.policy:
            grants = f"its stored access policy (si={sas.policy}) does not grant it"
        else:
            grants = "grants no such permission"
        return Refusal(f"the SAS token lacks the permission for this: it needs {wants} and {grants}",
                       "sas-permission")
    if code == "AuthorizationResourceTypeMismatch":
        return Refusal(f"the account SAS's resource types (srt={sas.resource_types}) do not cover {what}: it needs "
                       "o (object) for blobs and c (container) for listings", "sas-permission")
    if code == "AuthorizationServiceMismatch":
        return Refusal(f"the account SAS's services (ss={sas.services}) do not include b (blob)", "sas-permission")
    if code == "AuthorizationProtocolMismatch":
        return Refusal(f"the SAS token allows only {sas.protocol or 'HTTPS'} (spr=): use an https:// URL",
                       "sas-protocol")
    if code == "AuthorizationSourceIPMismatch":
        return Refusal(f"the SAS token allows requests only from {sas.ip} (sip=), not from this machine",
                       "sas-ip")
    if code not in AUTH_FAILED:
        return None
    if managed_disk:
        return Refusal("the managed disk's access SAS is no longer valid: access was revoked (`az disk "
                       "revoke-access`, or the upload was finished) or its --duration-in-seconds ran out; run "
                       "`az disk grant-access` again for a fresh SAS", "sas-revoked")
    if sas.policy:
        return Refusal(f"the SAS token's stored access policy (si={sas.policy}) no longer exists or has expired",
                       "sas-revoked")
    if sas.delegation_expiry:
        return Refusal(f"the user delegation SAS was refused: its key expired (ske={sas.delegation_expiry}) or "
                       "was revoked", "sas-revoked")
    if sas.resource == "b":
        return Refusal("the SAS token was refused: it is a blob SAS (sr=b), valid only for the one blob it was "
                       "made for (is it this blob's?), or the account key it was signed with was rotated",
                       "sas-scope")
    if sas.resource == "c":
        return Refusal("the SAS token was refused: it is a container SAS (sr=c), valid only for the container "
                       "it was made for (is it this one's?), or the account key it was signed with was rotated",
                       "sas-scope")
    return Refusal(f"the {sas.kind} was refused: its signature does not match this account and resource "
                   "(made for another, or the account key was rotated)", "sas-scope")


def _explain_bearer(code: str, detail: str, what: str, credential: Credential) -> Refusal | None:
    disk = credential.managed_disk or (credential.resource or "").startswith("https://disk.azure.com")
    role = DISK_ROLE if disk else CONTRIBUTOR_ROLE
    where = "the disk" if disk else "the storage account or container"
    if code in ("AuthorizationPermissionMismatch", "AuthorizationFailure"):
        return Refusal(f"the signed-in identity may not do this ({what}): give it the role {role} on {where} "
                       "(role assignments take a few minutes to apply)", "rbac")
    if code in AUTH_FAILED:
        why = detail.splitlines()[0][:200] if detail else code
        return Refusal(f"the service refused the Microsoft Entra ID token: {why}", "token-refused")
    return None


def authentication_detail(text: str | None) -> str | None:
    """``AuthenticationErrorDetail`` from an error body (XML) or the SDK's error message."""
    if not text:
        return None
    match = re.search(r"<AuthenticationErrorDetail>(.*?)</AuthenticationErrorDetail>", text, re.DOTALL) or \
        re.search(r"(?im)^authenticationerrordetail:\s*(.+)$", text)
    return match.group(1).strip() if match else None
