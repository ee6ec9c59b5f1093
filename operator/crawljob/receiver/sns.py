"""SNS deliveries: signature verification (SignatureVersion 1 and 2) and subscription confirmation.

SNS signs a canonical string of some of the message's fields with the key of a certificate
it publishes at ``SigningCertURL``. The certificate is fetched only over https from a host
matching the configured pattern (AWS's ``sns.<region>.amazonaws.com`` by default) and cached.
The pure parts (`signing_string`, `check_url`, `verify_with_certificate`) need no network.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import re
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

DEFAULT_CERT_HOST_PATTERN = r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$"

# The fields SNS signs, in this order (absent optional ones are skipped).
NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
HASHES: Mapping[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


class SnsRejected(Exception):
    """The message is not authentic or not allowed (answer 403)."""


class SnsUnavailable(Exception):
    """SNS could not be reached to fetch a certificate or confirm (answer 503: SNS retries)."""


def signing_string(fields: Mapping[str, str]) -> bytes:
    """The canonical ``name\\nvalue\\n`` string SNS signs for this message type."""
    names = NOTIFICATION_FIELDS if fields.get("Type") == "Notification" else CONFIRMATION_FIELDS
    parts: list[str] = []
    for name in names:
        if name in fields:
            parts += [name, fields[name]]
        elif name != "Subject":
            raise SnsRejected(f"SNS message lacks the signed field {name}")
    return ("\n".join(parts) + "\n").encode("utf-8")


def check_url(url: str, host_pattern: str, what: str) -> None:
    """Refuse *url* unless it is https on a host matching *host_pattern* (full match)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
    except ValueError as exc:
        raise SnsRejected(f"{what} {url!r} is not a URL") from exc
    if parts.scheme != "https":
        raise SnsRejected(f"{what} must be an https URL, got {url!r}")
    if not re.fullmatch(host_pattern, host):
        raise SnsRejected(f"{what} host {host!r} does not match the SNS host pattern {host_pattern!r}")


def verify_with_certificate(fields: Mapping[str, str], certificate: x509.Certificate) -> None:
    """Check the message's signature with *certificate*; SnsRejected if it does not verify."""
    version = fields.get("SignatureVersion", "")
    algorithm = HASHES.get(version)
    if algorithm is None:
        raise SnsRejected(f"unsupported SNS SignatureVersion {version!r} (expected 1 or 2)")
    try:
        signature = base64.b64decode(fields.get("Signature", ""), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SnsRejected("SNS Signature is not base64") from exc
    now = datetime.datetime.now(tz=datetime.UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise SnsRejected("the SNS signing certificate is not valid now")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SnsRejected("the SNS signing certificate does not hold an RSA key")
    try:
        key.verify(signature, signing_string(fields), padding.PKCS1v15(), algorithm())
    except InvalidSignature as exc:
        raise SnsRejected("SNS signature does not verify") from exc


@dataclass
class _Cached:
    certificate: x509.Certificate
    expires: float


class CertificateCache:
    """Signing certificates by URL, fetched on first use and kept for *ttl* seconds."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        host_pattern: str = DEFAULT_CERT_HOST_PATTERN,
        ssl_context: ssl.SSLContext | None = None,
        ttl: float = 3600.0,
        max_entries: int = 64,
        timeout: float = 3.0,
    ) -> None:
        self.session = session
        self.host_pattern = host_pattern
        self.ssl_context = ssl_context
        self.ttl = ttl
        self.max_entries = max_entries
        self.timeout = timeout
        self._entries: dict[str, _Cached] = {}
        # One lock for all fetches: they are rare (one per certificate and hour), and a lock per
        # URL would let senders of made-up URLs grow a dict without bound.
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def get(self, url: str) -> x509.Certificate:
        """The certificate at *url* (checked against the host pattern), from the cache if fresh."""
        check_url(url, self.host_pattern, "SigningCertURL")
        entry = self._entries.get(url)
        if entry is not None and entry.expires > time.monotonic():
            return entry.certificate
        async with self._lock:
            entry = self._entries.get(url)
            if entry is not None and entry.expires > time.monotonic():
                return entry.certificate
            certificate = await self._fetch(url)
            if len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)))
            self._entries[url] = _Cached(certificate, time.monotonic() + self.ttl)
            return certificate

    async def _fetch(self, url: str) -> x509.Certificate:
        self.fetches += 1
        try:
            async with self.session.get(
                url,
                ssl=self.ssl_context if self.ssl_context is not None else True,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                if response.status in (403, 404, 410):
                    raise SnsRejected(f"SigningCertURL {url} answered {response.status}: no such certificate")
                if response.status != 200:
                    raise SnsUnavailable(f"fetching the SNS signing certificate answered {response.status}")
                pem = await response.content.read(64 * 1024)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SnsUnavailable(f"cannot fetch the SNS signing certificate {url}: {exc!r}") from exc
        try:
            return x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            raise SnsRejected(f"SigningCertURL {url} does not hold a PEM certificate") from exc

    async def verify(self, fields: Mapping[str, str]) -> None:
        """Check the signature of an SNS message; SnsRejected or SnsUnavailable otherwise."""
        certificate = await self.get(fields.get("SigningCertURL", ""))
        verify_with_certificate(fields, certificate)

    async def confirm(self, fields: Mapping[str, str]) -> None:
        """Confirm a subscription by visiting its SubscribeURL (only an SNS host is ever visited)."""
        url = fields.get("SubscribeURL", "")
        check_url(url, self.host_pattern, "SubscribeURL")
        try:
            async with self.session.get(
                url,
                ssl=self.ssl_context if self.ssl_context is not None else True,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                if response.status != 200:
                    raise SnsUnavailable(f"confirming the SNS subscription answered {response.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SnsUnavailable(f"cannot confirm the SNS subscription: {exc!r}") from exc
