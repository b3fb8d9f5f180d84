"""Sign-in parts for the tests: a self-signed certificate for HTTPS on loopback, and a local managed-identity
endpoint that hands out Microsoft Entra ID-shaped tokens.

The endpoint speaks the App Service managed-identity protocol (what ``DefaultAzureCredential`` uses
when ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` are set, as on App Service, Functions and
Automation): ``GET IDENTITY_ENDPOINT?resource=R&api-version=2019-08-01`` with the header
``X-IDENTITY-HEADER``, answered with ``{"access_token", "expires_on", "resource", "token_type"}``.

Its tokens are JWTs with the claims Azurite's ``--oauth basic`` checks (``aud`` the resource, ``iss``
``https://sts.windows.net/TENANT/``, ``nbf``/``iat``/``exp``), signed with HS256 under a key of this
endpoint: Azurite's basic mode does not verify signatures (BlobTokenAuthenticator.ts: "Validate
signature, skip in basic check"), but :meth:`IdentityEndpoint.verify` does, for stand-ins that
check a token as the real service would (the managed-disk host in the tests).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.server
import ipaddress
import json
import os
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.loopback import quiet_server

TENANT = "72f988bf-0000-4000-8000-00000000a11e"
API_VERSION = "2019-08-01"
STORAGE_RESOURCE = "https://storage.azure.com"
DISK_RESOURCE = "https://disk.azure.com/"

# What DefaultAzureCredential would otherwise find before (or instead of) the managed identity: a
# service principal or workload identity from the environment, another managed-identity flavour, a
# restriction of the chain. Cleared for every sign-in test.
CLEARED_ENV = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
               "AZURE_CLIENT_CERTIFICATE_PASSWORD", "AZURE_USERNAME", "AZURE_PASSWORD",
               "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST", "AZURE_TOKEN_CREDENTIALS", "MSI_ENDPOINT",
               "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "IDENTITY_ENDPOINT", "IDENTITY_HEADER",
               "AZURE_POD_IDENTITY_AUTHORITY_HOST", "AZURE_STORAGE_CONNECTION_STRING")


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key, as PEM files."""

    cert: Path
    key: Path

    def environment(self) -> dict[str, str]:
        """What makes the SDK (requests: ``REQUESTS_CA_BUNDLE``) and ``ssl.create_default_context`` (OpenSSL:
        ``SSL_CERT_FILE``) trust it, for one process and its children, nothing system-wide."""
        return {"REQUESTS_CA_BUNDLE": str(self.cert), "SSL_CERT_FILE": str(self.cert)}


def make_certificate(folder: Path) -> Certificate:
    """A fresh P-256 certificate valid for a day, made with ``cryptography``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vhdtool test 127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    paths = Certificate(folder / "cert.pem", folder / "key.pem")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return paths


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims_of(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (what Azurite's basic mode reads)."""
    return dict(json.loads(_unb64(token.split(".")[1])))


@dataclass
class TokenRequest:
    """One request the endpoint saw."""

    time: float
    resource: str | None
    api_version: str | None
    header_ok: bool
    status: int
    serial: int | None = None


@dataclass
class IdentityEndpoint:
    """A managed-identity endpoint on 127.0.0.1 (App Service protocol), counting what it is asked.

    ``lifetime`` is the seconds each new token lives; ``fail_status`` makes it refuse every request;
    ``audience`` puts another ``aud`` in its tokens than the resource asked for.
    """

    lifetime: float = 3600.0
    fail_status: int | None = None
    audience: str | None = None  # the tokens' aud, if not the resource asked for
    requests: list[TokenRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.secret = secrets.token_urlsafe(24)  # the IDENTITY_HEADER value
        self.key = secrets.token_bytes(32)  # signs the tokens
        self._serial = 0
        self._lock = threading.Lock()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                status, body = endpoint._answer(self.path, self.headers.get("X-IDENTITY-HEADER"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = quiet_server(Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/msi/token"

    def environment(self) -> dict[str, str]:
        """The variables by which DefaultAzureCredential finds this endpoint (as on App Service)."""
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.secret}

    def issued(self, resource: str | None = None) -> list[TokenRequest]:
        """The requests answered with a token (for ``resource``, if given)."""
        with self._lock:
            return [r for r in self.requests if r.status == 200 and (resource is None or r.resource == resource)]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def mint(self, resource: str, lifetime: float | None = None, **extra: Any) -> tuple[str, int, int]:
        """A signed token for ``resource``; returns it, its expiry (epoch seconds) and its serial."""
        now = int(time.time())
        with self._lock:
            self._serial += 1
            serial = self._serial
        expires = now + int(self.lifetime if lifetime is None else lifetime)
        claims = {"aud": self.audience or resource, "iss": f"https://sts.windows.net/{TENANT}/", "iat": now, "nbf": now,
                  "exp": expires, "tid": TENANT, "oid": "0c0ffee0-0000-4000-8000-000000000001",
                  "sub": "0c0ffee0-0000-4000-8000-000000000001", "appid": "0c0ffee0-0000-4000-8000-0000000000a1",
                  "idtyp": "app", "ver": "1.0", "jti": f"vhdtool-test-{serial}", **extra}
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims).encode())
        signature = _b64(hmac.new(self.key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        return f"{head}.{body}.{signature}", expires, serial

    def verify(self, token: str, audience: str) -> str | None:
        """Why ``token`` would be refused for ``audience`` (signature, audience, lifetime), or ``None``."""
        try:
            head, body, signature = token.split(".")
        except ValueError:
            return "not a JWT"
        expected = _b64(hmac.new(self.key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, signature):
            return "bad signature"
        claims = claims_of(token)
        if claims.get("aud") != audience:
            return f"audience {claims.get('aud')!r}, not {audience!r}"
        now = time.time()
        if not claims["nbf"] <= now <= claims["exp"]:
            return "expired or not yet valid"
        return None

    def _answer(self, path: str, header: str | None) -> tuple[int, dict[str, Any]]:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query))
        resource = query.get("resource")
        header_ok = header is not None and hmac.compare_digest(header, self.secret)
        record = TokenRequest(time.monotonic(), resource, query.get("api-version"), header_ok, 200)
        with self._lock:
            self.requests.append(record)
        if not header_ok:
            record.status = 401
            return 401, {"statusCode": 401, "message": "X-IDENTITY-HEADER missing or wrong"}
        if query.get("api-version") != API_VERSION or not resource:
            record.status = 400
            return 400, {"statusCode": 400, "message": "api-version 2019-08-01 and a resource are required"}
        if self.fail_status is not None:
            record.status = self.fail_status
            return self.fail_status, {"statusCode": self.fail_status, "message": "no managed identity assigned"}
        token, expires, serial = self.mint(resource)
        record.serial = serial
        return 200, {"access_token": token, "expires_on": str(expires), "resource": resource,
                     "token_type": "Bearer", "client_id": "0c0ffee0-0000-4000-8000-0000000000a1"}


def sign_in_environment(endpoint: IdentityEndpoint | None, certificate: Certificate) -> dict[str, str]:
    """``os.environ`` as a sign-in test needs it: this endpoint as the managed identity, the certificate
    trusted, and nothing else DefaultAzureCredential could pick up first."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    env.update(certificate.environment())
    if endpoint is not None:
        env.update(endpoint.environment())
    return env
