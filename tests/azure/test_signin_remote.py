"""Disks already in Azure, read with a Microsoft Entra ID sign-in: ``info``, ``check`` and ``download`` of a blob
URL without SAS (and of ``CONTAINER/BLOB --account-url``) through ``DefaultAzureCredential``'s managed identity,
and ``download`` of an Entra-ID managed disk's read SAS, which the service challenges for a disk token.

The services are the ones of ``test_signin.py`` (Azurite over HTTPS with ``--oauth basic``, the local
managed-identity endpoint, a recording HTTPS proxy) and of ``test_signin_disk.py`` (the stand-in ``md-``
host in front of Azurite).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from support.azurite import Azurite, Recorded, RecordingProxy, Rule
from support.cli import run_cli
from support.identity import DISK_RESOURCE, STORAGE_RESOURCE, IdentityEndpoint, claims_of
from support.signin_helpers import Box, Disk, assert_signed_in_only, make_raw, needs_entra, without_token

from vhdtool import open_image
from vhdtool.azure.storage import Destination
from vhdtool.azure.upload import UploadOptions, upload
from vhdtool.extents import MiB


def test_info_check_and_download_sign_in_once(tmp_path: Path, box: Box, https_proxy: RecordingProxy,
                                              azurite_oauth: Azurite, signed_in: IdentityEndpoint,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    image = make_raw(tmp_path / "disk.raw", 12 * MiB, runs=10, run_length=64 * 1024)
    with open_image(str(image)) as disk:  # put there with the account key, not signed in
        upload(disk, Destination(connection_string=azurite_oauth.connection_string(), container=box.container,
                                 blob="disk.vhd"))
    https_proxy.clear()
    url = f"{https_proxy.endpoint}/{box.container}/disk.vhd"

    code, out, err = run_cli(["info", url, "--json"])
    assert code == 0, err
    facts = json.loads(out)
    assert (facts["format"], facts["virtual_size"]) == ("vhd", 12 * MiB), facts

    code, out, err = run_cli(["check", f"{box.container}/disk.vhd", "--account-url", https_proxy.endpoint])
    assert code in (0, 1) and "Traceback" not in err and "read from Azure" in out, out + err

    out_path = tmp_path / "copy.vhd"
    code, out, err = run_cli(["download", url, str(out_path), "--json"])
    assert code == 0, err
    assert out_path.read_bytes() == box.download("disk.vhd")
    assert_signed_in_only(https_proxy)
    assert len(signed_in.requests) == 1 and signed_in.issued(STORAGE_RESOURCE)


def test_download_of_an_entra_id_disk_answers_its_challenge(tmp_path: Path, azurite: Azurite, md_host: RecordingProxy,
                                                            signed_in: IdentityEndpoint,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``az disk grant-access --access-level Read`` on a disk with data access mode AzureActiveDirectory."""
    md_host.clear()
    md_host.rewrite = without_token
    image = make_raw(tmp_path / "disk.raw", 8 * MiB, runs=6, run_length=64 * 1024)
    disk = Disk(azurite, md_host, 8 * MiB + 512, permission="r")
    with open_image(str(image)) as source:  # the disk's content, written beforehand with the account key
        upload(source, Destination(connection_string=azurite.connection_string(), container=disk.container,
                                   blob="abcd"), UploadOptions(overwrite=True))
    md_host.add_rule(Rule(lambda r: True, "answer", times=10_000, answer=needs_entra(signed_in)))
    out_path = tmp_path / f"{uuid.uuid4().hex}.vhd"
    code, out, err = run_cli(["download", disk.url, str(out_path)])
    assert code == 0, err
    assert out_path.read_bytes() == disk.download()
    first, *rest = md_host.requests
    assert first.status == 401 and rest
    for rec in rest:
        assert "sig" in rec.query and rec.status is not None and rec.status < 300, rec
        assert claims_of(rec.headers["authorization"].removeprefix("Bearer "))["aud"] == DISK_RESOURCE
    assert [r.resource for r in signed_in.requests] == [DISK_RESOURCE]
    assert disk.signature not in out + err


def test_server_side_copy_sends_the_source_token_as_copy_source_authorization(
        tmp_path: Path, box: Box, https_proxy: RecordingProxy, azurite_oauth: Azurite, signed_in: IdentityEndpoint,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``copy URL CONTAINER/BLOB --account-url``, both sides signed in: the destination's requests carry a
    token, and each Put Page From URL carries one for the source in ``x-ms-copy-source-authorization``,
    which the stand-in service uses to read the source from the OAuth Azurite (so Azurite checks it)."""
    image = make_raw(tmp_path / "disk.raw", 12 * MiB, runs=10, run_length=64 * 1024)
    with open_image(str(image)) as disk:
        upload(disk, Destination(connection_string=azurite_oauth.connection_string(), container=box.container,
                                 blob="src.vhd"))
    https_proxy.clear()
    https_proxy.copy_from_url_keys = dict(azurite_oauth.accounts)
    try:
        code, out, err = run_cli(["copy", f"{https_proxy.endpoint}/{box.container}/src.vhd", f"{box.container}/dst.vhd",
                                  "--account-url", https_proxy.endpoint, "--mode", "server", "--json"])
    finally:
        https_proxy.copy_from_url_keys = None
    assert code == 0, err
    result = json.loads(out)
    assert result["mode"] == "server" and result["bytes_sent"] == 0
    assert box.download("dst.vhd") == box.download("src.vhd")
    assert_signed_in_only(https_proxy)
    copies = [r for r in https_proxy.requests if r.copy_source is not None]
    assert copies and all(r.status == 201 for r in copies)
    for rec in copies:
        assert "sig=" not in (rec.copy_source or "")
        scheme, _, token = (rec.copy_source_authorization or "").partition(" ")
        assert scheme == "Bearer" and claims_of(token)["aud"] == STORAGE_RESOURCE
    assert len(signed_in.requests) == 1  # the source's token and the destination's: one, from the cache
    assert all(r.copy_source_authorization.removeprefix("Bearer ") not in out + err  # type: ignore[union-attr]
               for r in copies)

    # The check is real: a source token spoiled on the way (a token for another audience) is refused by Azurite.
    https_proxy.clear()
    https_proxy.copy_from_url_keys = dict(azurite_oauth.accounts)
    other, _, _ = signed_in.mint("https://management.azure.com/")

    def spoil(rec: Recorded) -> None:
        if rec.copy_source_authorization:
            rec.copy_source_authorization = f"Bearer {other}"

    https_proxy.on_request = spoil
    try:
        code, out, err = run_cli(["copy", f"{https_proxy.endpoint}/{box.container}/src.vhd", f"{box.container}/x.vhd",
                                  "--account-url", https_proxy.endpoint, "--mode", "server"])
    finally:
        https_proxy.copy_from_url_keys = None
        https_proxy.on_request = None
    assert code == 1 and "CannotVerifyCopySource" in err, err
