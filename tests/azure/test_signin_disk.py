"""Managed disks whose data access needs Microsoft Entra ID (``az disk create --data-access-auth-mode
AzureActiveDirectory``): the bearer challenge answered with a token for ``https://disk.azure.com/``.

Azure's ``md-*.blob.storage.azure.net`` hosts cannot run here; the stand-in of ``tests/support/signin_helpers.py``
does what they do, in front of Azurite. The disk itself is a page blob created beforehand with the exact
size, as in the other managed-disk tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.azurite import Azurite, RecordingProxy, Rule
from support.cli import run_cli
from support.identity import DISK_RESOURCE, IdentityEndpoint, claims_of
from support.signin_helpers import Disk, make_raw, needs_entra, without_token

from vhdtool.extents import MiB


@pytest.fixture
def host(md_host: RecordingProxy) -> RecordingProxy:
    md_host.clear()
    md_host.rewrite = without_token
    return md_host


def test_challenge_answered_with_one_disk_token(tmp_path: Path, azurite: Azurite, host: RecordingProxy,
                                               signed_in: IdentityEndpoint, capsys: pytest.CaptureFixture[str]) -> None:
    image = make_raw(tmp_path / "disk.raw", 12 * MiB, runs=24, run_length=64 * 1024)
    disk = Disk(azurite, host, 12 * MiB + 512)
    host.add_rule(Rule(lambda r: True, "answer", times=10_000, answer=needs_entra(signed_in)))
    code, out, err = run_cli(["upload", str(image), disk.url, "--managed-disk", "--verify=full", "--json"])
    assert code == 0, err
    assert disk.download()[:-512] == image.read_bytes()
    assert json.loads(out)["requests"] == len(host.requests)

    first, *rest = host.requests
    assert (first.method, first.status, "authorization" in first.headers) == ("HEAD", 401, False)
    assert rest and any(r.is_put_page for r in rest)
    for rec in rest:  # every later request: the SAS and a token for the disk resource
        assert "sig" in rec.query and rec.status is not None and rec.status < 300, rec
        assert claims_of(rec.headers["authorization"].removeprefix("Bearer "))["aud"] == DISK_RESOURCE
    (asked,) = signed_in.requests
    assert (asked.resource, asked.status) == (DISK_RESOURCE, 200)  # "https://disk.azure.com/", slash kept
    assert disk.signature not in out + err


def test_sas_only_disk_asks_for_no_token(tmp_path: Path, azurite: Azurite, host: RecordingProxy,
                                         signed_in: IdentityEndpoint, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a challenge (a disk with the default data access mode) the SAS alone is used."""
    image = make_raw(tmp_path / "disk.raw", 4 * MiB, runs=4, run_length=64 * 1024)
    disk = Disk(azurite, host, 4 * MiB + 512)
    code, out, err = run_cli(["upload", str(image), disk.url, "--managed-disk"])
    assert code == 0, err
    assert disk.download()[:-512] == image.read_bytes()
    assert not signed_in.requests
    assert all("authorization" not in r.headers for r in host.requests)


def test_challenge_without_a_sign_in_is_one_line(tmp_path: Path, azurite: Azurite, host: RecordingProxy,
                                                 signed_in: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    signed_in.fail_status = 400  # no identity assigned
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential")  # no developer sign-in either
    image = make_raw(tmp_path / "disk.raw", 4 * MiB, runs=4, run_length=64 * 1024)
    disk = Disk(azurite, host, 4 * MiB + 512)
    host.add_rule(Rule(lambda r: True, "answer", times=10_000, answer=needs_entra(signed_in)))
    code, out, err = run_cli(["upload", str(image), disk.url, "--managed-disk"])
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "the service asks for a Microsoft Entra ID token for https://disk.azure.com/" in err
    assert "no sign-in worked (tried ManagedIdentity)" in err and "Data Operator for Managed Disks" in err
    assert disk.signature not in err
    assert [r.status for r in host.requests] == [401]
    assert [r.resource for r in signed_in.requests] == [DISK_RESOURCE]


def test_identity_without_the_disk_role_is_told_which_role(tmp_path: Path, azurite: Azurite, host: RecordingProxy,
                                                           signed_in: IdentityEndpoint,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    image = make_raw(tmp_path / "disk.raw", 4 * MiB, runs=4, run_length=64 * 1024)
    disk = Disk(azurite, host, 4 * MiB + 512)
    host.add_rule(Rule(lambda r: True, "answer", times=10_000, answer=needs_entra(signed_in, role=False)))
    code, out, err = run_cli(["upload", str(image), disk.url, "--managed-disk"])
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "HTTP 403 AuthorizationPermissionMismatch: the signed-in identity may not do this (reading blob " \
           "properties): give it the role Data Operator for Managed Disks on the disk" in err, err
    assert [r.status for r in host.requests] == [401, 403]
    assert disk.signature not in err
