"""The fixtures the whole suite shares (Azurite, certificates, sign-in, fixture files) and the CI skip rule."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.azurite import Azurite, RecordingProxy, running_azurite
from support.fixture_files import unpack_fixture
from support.identity import CLEARED_ENV, Certificate, IdentityEndpoint, make_certificate
from support.signin_helpers import Box


@pytest.fixture
def fixture_file(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``fixture_file("vhd/dynamic.vhd")`` -> a fresh, writable copy of that fixture."""
    return lambda name: unpack_fixture(name, tmp_path)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One in-memory Azurite for the whole run, with a second account for cross-account copies;
    tests isolate themselves by container name."""
    with running_azurite(second_account=True) as service:
        yield service


@pytest.fixture(scope="module")
def proxy(azurite: Azurite) -> Iterator[RecordingProxy]:
    """A recording (and fault-injecting) proxy in front of the session's Azurite, one per test module,
    so a module's rules and counts never leak into another's. A module that needs it set up
    otherwise (a stand-in for Put Page From URL, a fresh one per test) defines its own."""
    p = RecordingProxy(azurite.port)
    yield p
    p.close()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, made for this run (trusted only where a test says so)."""
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def azurite_oauth(certificate: Certificate) -> Iterator[Azurite]:
    """A second Azurite, over HTTPS, that also accepts Microsoft Entra ID tokens (``--oauth basic``)."""
    with running_azurite(certificate=certificate, oauth=True) as service:
        yield service


@pytest.fixture(scope="session")
def https_proxy(azurite_oauth: Azurite, certificate: Certificate) -> Iterator[RecordingProxy]:
    """A recording proxy speaking HTTPS on both sides, in front of the OAuth Azurite."""
    upstream = ssl.create_default_context(cafile=str(certificate.cert))
    proxy = RecordingProxy(azurite_oauth.port, certificate=certificate, upstream_tls=upstream)
    yield proxy
    proxy.close()


@pytest.fixture
def box(azurite_oauth: Azurite, certificate: Certificate, https_proxy: RecordingProxy) -> Box:
    """A fresh container in the OAuth Azurite; the HTTPS proxy's record cleared."""
    https_proxy.clear()
    return Box(azurite_oauth, certificate)


@pytest.fixture(scope="session")
def md_host(azurite: Azurite, certificate: Certificate) -> Iterator[RecordingProxy]:
    """The stand-in for a managed disk's ``md-`` host (see ``tests/support/signin_helpers.py``): HTTPS,
    Azurite behind."""
    proxy = RecordingProxy(azurite.port, certificate=certificate)
    yield proxy
    proxy.close()


@pytest.fixture
def identity() -> Iterator[IdentityEndpoint]:
    """A fresh local managed-identity endpoint (App Service protocol) for one test."""
    endpoint = IdentityEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture
def signed_in(monkeypatch: pytest.MonkeyPatch, certificate: Certificate,
              identity: IdentityEndpoint) -> IdentityEndpoint:
    """This process signed in as on an App Service with a managed identity: ``identity`` is the endpoint,
    the test certificate is trusted (``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``), and nothing else
    DefaultAzureCredential looks at first is set. Undone after the test."""
    for name in CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**certificate.environment(), **identity.environment()}.items():
        monkeypatch.setenv(name, value)
    return identity


@pytest.fixture
def sample(tmp_path: Path) -> dict[str, Path]:
    """The sample set of ``fixtures/sample`` (a generalized Linux OS disk as VHDX, a data disk as VHD)."""
    src = tmp_path / "src"
    src.mkdir()
    return {"os": unpack_fixture("sample/linux-os.vhdx.gz", src),
            "data": unpack_fixture("sample/data.vhd.gz", src)}


# ---------------------------------------------------------------- no silent skips in CI

# Skips that may happen even in CI, each with why. Under CI=true any other skip fails the test:
# a missing tool or a broken import must not turn a whole suite green unrun.
ALLOWED_SKIPS: tuple[tuple[str, str], ...] = (
    # (substring of the skip reason, why it is acceptable)
)


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _skip_allowed(reason: str) -> bool:
    return any(pattern in reason for pattern, _why in ALLOWED_SKIPS)


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if _ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if not _skip_allowed(reason):
            report.outcome = "failed"
            report.longrepr = f"skipped under CI=true (not on the allow-list in tests/conftest.py): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if _ci() and report.skipped:
        reason = _skip_reason(report)
        if not _skip_allowed(reason):
            report.outcome = "failed"
            report.longrepr = f"module skipped under CI=true (not on the allow-list in tests/conftest.py): {reason}"
