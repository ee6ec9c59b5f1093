"""The HTTPS side of SNS for tests: a test CA (trustme), signing certificates and a SubscribeURL.

`serve_fake_sns` serves, over HTTPS on localhost with a certificate of its own CA:
- ``/cert.pem``: the signing certificate (subject ``localhost``) whose key `FakeSns.sign` uses;
- ``/other-subject.pem``: a certificate of the same CA and key for ``evil.example``;
- ``/slow.pem``: the signing certificate, answered only once `FakeSns.release_slow` is set;
- ``/confirm``: the SubscribeURL, recording the tokens it confirms.
Receivers under test use host pattern ``^localhost$``, subject pattern ``^localhost$`` and the CA file.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from crawljob.receiver import sns
from crawljob.receiver.settings import ReceiverSettings


def sns_timestamp(when: datetime.datetime | None = None) -> str:
    """An SNS-style Timestamp (``2026-11-28T09:14:07.482Z``), now by default."""
    when = when or datetime.datetime.now(tz=datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


@dataclass
class FakeSns:
    """What the fake serves and records."""

    base: str
    key: rsa.RSAPrivateKey
    ca_file: str
    cert_fetches: int = 0
    confirmations: list[str] = field(default_factory=list)
    release_slow: asyncio.Event = field(default_factory=asyncio.Event)

    def sign(
        self,
        fields: dict[str, str],
        version: str = "1",
        *,
        cert_path: str = "/cert.pem",
        timestamp: str | None = None,
    ) -> dict[str, str]:
        """*fields* as SNS would send them: a fresh Timestamp (unless given), signed with our key."""
        message = dict(fields, SignatureVersion=version, SigningCertURL=f"{self.base}{cert_path}")
        message["Timestamp"] = timestamp if timestamp is not None else sns_timestamp()
        if "SubscribeURL" in message:
            message["SubscribeURL"] = f"{self.base}/confirm?Token={message.get('Token', '')}"
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(sns.signing_string(message), padding.PKCS1v15(), algorithm)
        message["Signature"] = base64.b64encode(signature).decode()
        return message


def _same_key_certificate(ca: trustme.CA, key: rsa.RSAPrivateKey, name: str) -> bytes:
    """A certificate of *ca* for *name* holding *key*: a valid signature under the wrong subject."""
    ca_certificate = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    now = datetime.datetime.now(tz=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


@asynccontextmanager
async def serve_fake_sns(directory: Path) -> AsyncIterator[FakeSns]:
    """The fake SNS on an HTTPS port of 127.0.0.1 (named ``localhost``); its CA file in *directory*."""
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert("localhost", key_type=trustme.KeyType.RSA)
    ca_file = directory / "sns-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    other_subject = _same_key_certificate(ca, key, "evil.example")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(server_context)
    holder: dict[str, FakeSns] = {}

    async def certificate(request: web.Request) -> web.Response:
        holder["sns"].cert_fetches += 1
        return web.Response(body=leaf.cert_chain_pems[0].bytes(), content_type="application/x-pem-file")

    async def slow_certificate(request: web.Request) -> web.Response:
        await holder["sns"].release_slow.wait()
        return await certificate(request)

    async def other_certificate(request: web.Request) -> web.Response:
        holder["sns"].cert_fetches += 1
        return web.Response(body=other_subject, content_type="application/x-pem-file")

    async def confirm(request: web.Request) -> web.Response:
        holder["sns"].confirmations.append(request.query.get("Token", ""))
        return web.Response(text="<ConfirmSubscriptionResponse/>", content_type="text/xml")

    app = web.Application()
    app.router.add_get("/cert.pem", certificate)
    app.router.add_get("/slow.pem", slow_certificate)
    app.router.add_get("/other-subject.pem", other_certificate)
    app.router.add_get("/confirm", confirm)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = runner.addresses[0][1]
    holder["sns"] = FakeSns(base=f"https://localhost:{port}", key=key, ca_file=str(ca_file))
    try:
        yield holder["sns"]
    finally:
        holder["sns"].release_slow.set()
        await runner.cleanup()


def sns_receiver_settings(
    fake: FakeSns, kube_server: str, namespace: str, topic: str, token: str, **overrides: Any
) -> ReceiverSettings:
    """Receiver settings that trust *fake*'s certificates, list *topic* and require *token*."""
    options: dict[str, Any] = {
        "kube_server": kube_server,
        "namespace": namespace,
        "sns_cert_host_pattern": r"^localhost$",
        "sns_cert_subject_pattern": r"^localhost$",
        "sns_ca_file": fake.ca_file,
        "sns_topic_arns": (topic,),
        "auth_mode": "token",
        "auth_token": token,
    }
    return ReceiverSettings(**(options | overrides))
