"""A destination's blob URL and credential, found without the SDK, are the ones the SDK's ``BlobClient`` takes.

The oracle is the SDK itself: for every URL, connection string and account URL below (and for
generated blob names), ``Destination.address()`` must give the URL ``BlobClient.url`` gives and the
account key its Shared Key credential holds, so the direct requests and the SDK's reach one blob.
"""

from __future__ import annotations

import urllib.parse

import pytest
from azure.storage.blob import BlobClient, ContainerClient
from hypothesis import given, settings
from hypothesis import strategies as st
from support.azurite import ACCOUNT, ACCOUNT_KEY

from vhdtool.azure.address import AddressError, container_url
from vhdtool.azure.container import ContainerDestination
from vhdtool.azure.rest import API_VERSION
from vhdtool.azure.storage import Destination, PageBlobTarget, PermanentError, public_url

KEY = "a2V5IG9mIGEgdGVzdCBhY2NvdW50LCBub3QgYSBzZWNyZXQ="
SAS = "sv=2023-11-03&sr=b&sp=rw&se=2026-12-31T00%3A00%3A00Z&sig=abc%2Bdef%2F1%3D"

BLOB_URLS = [
    f"https://acct.blob.core.windows.net/disks/os.vhd?{SAS}",
    "https://acct.blob.core.windows.net/disks/dir/sub/os.vhd",
    "https://acct.blob.core.windows.net/disks/name%20with%20space.vhd",
    "https://acct.blob.core.windows.net/disks/d%C3%ADsk%2B1.vhd/",
    "https://acct.blob.core.windows.net/disks/dísk 2.vhd",
    f"http://127.0.0.1:10000/{ACCOUNT}/disks/dir/os.vhd?sv=2023-11-03&sig=x%3D",
    f"http://localhost:10000/{ACCOUNT}/disks/os.vhd",
    "https://md-abcd1234.z22.blob.storage.azure.net/xyzabc/abcd?sv=2018-03-28&sr=b&si=0a1b-2c&sig=s%2Fg%3D",
    "https://storage.example.com/disks/os.vhd?se=2026-12-31T00:00:00Z&sig=raw:colon",
    "https://storage.example.com/prefix/disks/os.vhd",
    "acct.blob.core.windows.net/disks/os.vhd",
]

CONNECTION_STRINGS = [
    f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
    f"BlobEndpoint=http://127.0.0.1:10000/{ACCOUNT};",
    f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.chinacloudapi.cn",
    f"AccountName=acct;AccountKey={KEY}",
    f"accountname=acct;accountkey={KEY};endpointsuffix=core.usgovcloudapi.net;",
    f"AccountName=acct;AccountKey={KEY};BlobEndpoint=https://acct.blob.core.windows.net/;",
    f"BlobEndpoint=https://acct.blob.core.windows.net;SharedAccessSignature={SAS}",
    f"BlobEndpoint=https://storage.example.com/base/;SharedAccessSignature=?{SAS}",
    "UseDevelopmentStorage=true",
    f"AccountName=acct;SharedAccessSignature={SAS}",
]


def sdk_view(client: BlobClient) -> tuple[str, str, str | None, str | None]:
    """``(url without query, query, account, key)`` of an SDK client."""
    parts = urllib.parse.urlsplit(client.url)
    credential = client.credential
    return (urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), parts.query,
            getattr(credential, "account_name", None), getattr(credential, "account_key", None))


def our_view(dest: Destination) -> tuple[str, str, str | None, str | None]:
    address = dest.address()
    assert "?" not in address.url
    return address.url, address.query, address.account, address.key


@pytest.mark.parametrize("url", BLOB_URLS)
def test_a_blob_url_is_read_as_the_sdk_reads_it(url: str) -> None:
    assert our_view(Destination(url=url)) == sdk_view(BlobClient.from_blob_url(url))


@pytest.mark.parametrize("connection_string", CONNECTION_STRINGS)
@pytest.mark.parametrize("blob", ["os.vhd", "dir/sub/os 1.vhd", "dísk+ä~.vhd"])
def test_a_connection_string_is_read_as_the_sdk_reads_it(connection_string: str, blob: str) -> None:
    client = BlobClient.from_connection_string(connection_string, "disks", blob)
    dest = Destination(connection_string=connection_string, container="disks", blob=blob)
    assert our_view(dest) == sdk_view(client)


@pytest.mark.parametrize("account_url", ["https://acct.blob.core.windows.net", "https://acct.blob.core.windows.net/",
                                         "acct.blob.core.windows.net", "https://storage.example.com/base/"])
def test_an_account_url_is_joined_as_the_sdk_joins_it(account_url: str) -> None:
    client = BlobClient(account_url, "disks", "dir/os 1.vhd")
    ours = our_view(Destination(account_url=account_url, container="disks", blob="dir/os 1.vhd"))
    assert ours == sdk_view(client)[:2] + (None, None)  # signed with a token: no key
    container = container_url(account_url, "disks")
    assert ours[0].startswith(container + "/")


NAMES = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=24).filter(
    lambda s: s.strip("/") == s and "//" not in s and s.strip() == s)


@settings(max_examples=150, deadline=None)
@given(container=st.from_regex(r"[a-z0-9]{3,12}", fullmatch=True), blob=NAMES)
def test_generated_names_reach_the_blob_the_sdk_reaches(container: str, blob: str) -> None:
    connection_string = CONNECTION_STRINGS[0]
    client = BlobClient.from_connection_string(connection_string, container, blob)
    assert our_view(Destination(connection_string=connection_string, container=container, blob=blob)) \
        == sdk_view(client)
    # The same blob named by a URL, its name quoted as a user would quote it.
    url = f"https://acct.blob.core.windows.net/{container}/{urllib.parse.quote(blob)}?{SAS}"
    assert our_view(Destination(url=url)) == sdk_view(BlobClient.from_blob_url(url))


@pytest.mark.parametrize("connection_string, message", [
    ("", "blank or malformed"),
    ("AccountName=acct;AccountKey", "blank or malformed"),
    (f"AccountKey={KEY}", "no BlobEndpoint or AccountName"),
    ("AccountName=a;BlobSecondaryEndpoint=https://a-secondary.blob.core.windows.net", "only a secondary"),
])
def test_a_connection_string_naming_no_blob_is_refused_in_one_line(connection_string: str, message: str) -> None:
    dest = Destination(connection_string=connection_string, container="disks", blob="os.vhd")
    with pytest.raises(AddressError, match=message):
        dest.address()
    with pytest.raises(ValueError):  # the SDK refuses it too
        BlobClient.from_connection_string(connection_string, "disks", "os.vhd")
    with pytest.raises(PermanentError, match=message) as caught:
        PageBlobTarget(dest)
    assert "\n" not in str(caught.value) and KEY not in str(caught.value)


def test_the_api_version_is_one_the_sdk_speaks() -> None:
    client = BlobClient.from_blob_url(BLOB_URLS[0], api_version=API_VERSION)
    assert client.api_version == API_VERSION


@pytest.mark.parametrize("connection_string", CONNECTION_STRINGS)
def test_a_containers_public_url_is_the_sdks(connection_string: str) -> None:
    sdk = ContainerClient.from_connection_string(connection_string, "disks").url
    ours = ContainerDestination(container="disks", connection_string=connection_string).describe()
    assert ours == public_url(sdk).rstrip("/")
