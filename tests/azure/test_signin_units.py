"""``vhdtool.azure.signin`` on its own: the token cache's timing, challenges and SAS fields as the services write them,
and the refusals Azurite cannot produce (user delegation keys, source IPs, account services)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest
from azure.core.credentials import AccessTokenInfo
from azure.core.pipeline.policies._authentication import _should_refresh_token

import vhdtool.azure.storage
from vhdtool.azure import signin
from vhdtool.azure.signin import (
    STORAGE_SCOPE,
    Credential,
    ScopedCredential,
    TokenCache,
    explain_refusal,
    parse_challenge,
    parse_sas,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Issuer:
    """A credential handing out numbered tokens of a given lifetime (and refresh_on, as MSAL gives for long ones)."""

    def __init__(self, clock: Clock, lifetime: float, refresh_half: bool = False) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.refresh_half = refresh_half
        self.calls: list[tuple[str, dict[str, Any] | None]] = []
        self.fail = False
        self._lock = threading.Lock()

    def get_token_info(self, scope: str, options: dict[str, Any] | None = None) -> AccessTokenInfo:
        with self._lock:
            self.calls.append((scope, options))
            if self.fail:
                raise RuntimeError("identity endpoint down")
            now = self.clock()
            time.sleep(0.01)  # lets concurrent callers pile up
            return AccessTokenInfo(f"t{len(self.calls)}", int(now + self.lifetime),
                                   refresh_on=int(now + self.lifetime / 2) if self.refresh_half else None)


def test_an_hour_long_token_is_fetched_once_and_replaced_five_minutes_before_expiry() -> None:
    clock = Clock()
    issuer = Issuer(clock, 3600)
    cache = TokenCache(issuer, clock)
    start = clock.now
    for step in range(0, 3300, 3):  # a request every 3 s for 55 minutes
        clock.now = start + step
        assert cache.get_token_info(STORAGE_SCOPE).token == "t1"
    clock.now = start + 3300.5
    assert cache.get_token_info(STORAGE_SCOPE).token == "t2"
    assert cache.fetches == 2 and len(issuer.calls) == 2


def test_a_day_long_managed_identity_token_is_replaced_at_its_refresh_time() -> None:
    clock = Clock()
    issuer = Issuer(clock, 86400, refresh_half=True)
    cache = TokenCache(issuer, clock)
    start = clock.now
    assert cache.get_token_info(STORAGE_SCOPE).token == "t1"
    clock.now = start + 43199
    assert cache.get_token_info(STORAGE_SCOPE).token == "t1"
    clock.now = start + 43201
    assert cache.get_token_info(STORAGE_SCOPE).token == "t2"


def test_a_short_token_is_replaced_half_way() -> None:
    clock = Clock()
    cache = TokenCache(Issuer(clock, 6), clock)
    start = clock.now
    info = cache.get_token_info(STORAGE_SCOPE)
    assert info.expires_on == int(start + 3)  # reported: when the cache replaces it
    clock.now = start + 2.9
    assert cache.get_token_info(STORAGE_SCOPE).token == "t1"
    clock.now = start + 3.1
    assert cache.get_token_info(STORAGE_SCOPE).token == "t2"


def test_azure_core_keeps_a_long_token_and_asks_the_cache_about_a_short_one() -> None:
    """The SDK's policy decides from the reported expiry when to ask again: a long token it keeps; a short one
    it asks about on every request, which the cache answers without a fetch."""
    real = TokenCache(Issuer(time.time, 3600), time.time)  # type: ignore[arg-type]
    assert not _should_refresh_token(real.get_token_info(STORAGE_SCOPE), 0)
    issuer = Issuer(time.time, 60)  # type: ignore[arg-type]
    short = TokenCache(issuer, time.time)
    for _ in range(20):
        assert _should_refresh_token(short.get_token_info(STORAGE_SCOPE), 0)
    assert len(issuer.calls) == 1


def test_a_failed_refresh_keeps_the_valid_token_and_retries_later_not_per_request() -> None:
    clock = Clock()
    issuer = Issuer(clock, 600)
    cache = TokenCache(issuer, clock)
    start = clock.now
    cache.token(STORAGE_SCOPE)
    issuer.fail = True
    clock.now = start + 301  # due for replacement (half of 600 s)
    assert cache.token(STORAGE_SCOPE).token == "t1"
    calls = len(issuer.calls)
    for _ in range(50):
        assert cache.token(STORAGE_SCOPE).token == "t1"
    assert len(issuer.calls) == calls  # not one attempt per request
    clock.now = start + 301 + 31
    cache.token(STORAGE_SCOPE)
    assert len(issuer.calls) == calls + 1
    clock.now = start + 600
    with pytest.raises(RuntimeError):
        cache.token(STORAGE_SCOPE)


def test_threads_asking_at_once_cause_one_fetch() -> None:
    clock = Clock()
    issuer = Issuer(clock, 3600)
    cache = TokenCache(issuer, clock)
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get_token_info(STORAGE_SCOPE).token))
               for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == ["t1"] * 16 and len(issuer.calls) == 1


def test_scoped_credential_answers_storage_requests_for_the_challenged_resource() -> None:
    clock = Clock()
    issuer = Issuer(clock, 3600)
    cache = TokenCache(issuer, clock)
    disk = ScopedCredential(cache, "https://disk.azure.com//.default", "tenant-1")
    assert disk.get_token_info(STORAGE_SCOPE).token == "t1"
    assert disk.bearer() == "Bearer t1"
    assert disk.get_token("https://other/.default").token == "t2"
    assert issuer.calls == [("https://disk.azure.com//.default", {"tenant_id": "tenant-1"}),
                            ("https://other/.default", {"tenant_id": "tenant-1"})]
    with pytest.raises(ValueError):
        cache.get_token_info("a", "b")


def test_claims_bypass_the_cache() -> None:
    clock = Clock()
    issuer = Issuer(clock, 3600)
    cache = TokenCache(issuer, clock)
    cache.get_token_info(STORAGE_SCOPE)
    assert cache.get_token_info(STORAGE_SCOPE, options={"claims": '{"access_token":{}}'}).token == "t2"
    assert issuer.calls[-1][1] == {"claims": '{"access_token":{}}'}


def test_shared_credential_is_one_per_sign_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:1/a")
    monkeypatch.setenv("IDENTITY_HEADER", "x")
    first = signin.shared_credential()
    assert signin.shared_credential() is first
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "not part of the sign-in")
    assert signin.shared_credential() is first
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:1/b")
    assert signin.shared_credential() is not first


@pytest.mark.parametrize(("header", "resource", "tenant"), [
    # Azure Storage's own form: space separated, no quotes.
    ("Bearer authorization_uri=https://login.microsoftonline.com/72f988bf/oauth2/authorize "
     "resource_id=https://disk.azure.com/", "https://disk.azure.com/", "72f988bf"),
    # Quoted and comma separated, as SDK tests write it.
    ('Bearer authorization_uri="https://login.microsoftonline.com/t2", resource_id="https://storage.azure.com"',
     "https://storage.azure.com", "t2"),
    ('Bearer authorization_uri="https://login.microsoftonline.com/t3/oauth2/authorize", '
     'error="invalid_token", resource_id="https://disk.azure.com/"', "https://disk.azure.com/", "t3"),
])
def test_bearer_challenges_are_read_in_their_written_forms(header: str, resource: str, tenant: str) -> None:
    challenge = parse_challenge(header)
    assert challenge is not None
    assert (challenge.resource, challenge.tenant) == (resource, tenant)
    assert challenge.scope == resource + "/.default"


@pytest.mark.parametrize("header", [None, "", "Basic realm=x", "Bearer authorization_uri=https://login/x"])
def test_no_challenge_without_a_bearer_resource(header: str | None) -> None:
    assert parse_challenge(header) is None


def test_sas_fields_as_services_write_them() -> None:
    sas = parse_sas("sv=2018-03-28&sr=b&si=ec6f3b8a-1&sig=abc%3D")
    assert sas is not None and sas.policy == "ec6f3b8a-1" and sas.kind == "blob SAS (sr=b)" and sas.expiry is None
    dotnet = parse_sas("?se=2026-01-02T03:04:05.1234567Z&st=2026-01-01&sp=rw&sig=x")
    assert dotnet is not None and dotnet.expiry == dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc)
    assert dotnet.start == dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert parse_sas("ss=b&srt=o&sig=x").kind == "account SAS"  # type: ignore[union-attr]
    assert parse_sas("se=2026-01-01&sp=r") is None  # no signature, no SAS


def _refused(code: str, query: str, what: str = "writing pages at byte 0", status: int = 403, **kw: Any) -> str:
    found = explain_refusal(status, code, None, what, Credential(sas=parse_sas(query), **kw))
    assert found is not None
    return found.text


def test_refusals_azurite_cannot_produce() -> None:
    assert "its key expired (ske=2026-01-01T00:00:00Z)" in _refused(
        "AuthenticationFailed", "sr=b&sp=rw&ske=2026-01-01T00:00:00Z&skoid=x&se=2999-01-01&sig=x")
    assert "only from 10.0.0.0-10.0.0.255 (sip=)" in _refused(
        "AuthorizationSourceIPMismatch", "sr=c&sp=rw&sip=10.0.0.0-10.0.0.255&se=2999-01-01&sig=x")
    assert "services (ss=q) do not include b (blob)" in _refused("AuthorizationServiceMismatch",
                                                                 "ss=q&srt=o&sp=rw&se=2999-01-01&sig=x")
    # Azure's expired-SAS answer is recognised by its detail even when this machine's clock lags.
    lagging = explain_refusal(403, "AuthenticationFailed", "Signature not valid in the specified time frame: ...",
                              "writing pages at byte 0", Credential(sas=parse_sas("se=2999-01-01&sig=x")))
    assert lagging is not None and lagging.reason == "sas-expired"


def test_not_every_refusal_is_about_the_credential() -> None:
    none = Credential(sas=parse_sas("sr=b&sp=rw&se=2999-01-01&sig=x"))
    assert explain_refusal(404, "BlobNotFound", None, "reading", none) is None
    assert explain_refusal(403, "AccountIsDisabled", None, "reading", none) is None
    assert explain_refusal(409, "LeaseIdMissing", None, "writing", Credential(bearer=True)) is None


def test_bearer_tokens_are_scrubbed_from_any_text() -> None:
    from support.identity import IdentityEndpoint

    endpoint = IdentityEndpoint()
    try:
        token, _, _ = endpoint.mint("https://storage.azure.com")
    finally:
        endpoint.close()
    text = vhdtool.azure.storage.scrub(f"refused: Bearer {token} (and again {token})")
    assert token not in text and token.split(".")[1] not in text and text.count("REDACTED") == 2
