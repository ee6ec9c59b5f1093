"""SNS deliveries: signature verification (SignatureVersion 1 and 2) and subscription confirmation.

SNS signs a canonical string of some of the message's fields with the key of a certificate
it publishes at ``SigningCertURL``. The certificate is fetched only over https from a host
matching the configured pattern (exactly ``sns.<region>.amazonaws.com``, with the China and
GovCloud partitions, by default), its subject must name SNS, and it is cached; failed fetches
are cached briefly too, and each URL has its own lock so one slow URL delays no other message.
Messages older than the configured age are refused (SNS retries for at most an hour).
The pure parts (`signing_string`, `check_url`, `check_timestamp`, `check_subject`,
`verify_with_certificate`) need no network.
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
from cryptography.x509.oid import NameOID

# A region is `xx-name-N` (`us-gov-west-1` in GovCloud); China's hosts end in .com.cn. A bare
# `[a-z0-9-]+` also admitted `sns.s3.amazonaws.com`, an S3 bucket's virtual host.
DEFAULT_CERT_HOST_PATTERN = (
    r"^sns\.(?:[a-z]{2}(?:-gov)?-[a-z]+-[0-9]+\.amazonaws\.com|cn-[a-z]+-[0-9]+\.amazonaws\.com\.cn)$"
)
# The subject (CN or a DNS name) of SNS's signing certificates: sns.amazonaws.com, or a regional name.
DEFAULT_CERT_SUBJECT_PATTERN = r"^sns(?:\.[a-z0-9-]+)?\.amazonaws\.com(?:\.cn)?$"
# SNS retries a delivery for at most 3,600 s; a little clock skew either way is tolerated.
DEFAULT_MAX_AGE_SECONDS = 3600.0
CLOCK_SKEW_SECONDS = 300.0

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
    """Refuse *url* unless it is https on a host matching *host_pattern* (full match).

    The URL must be plain: no user info (`@`), backslash, whitespace or control character, where
    URL parsers differ, so that the host checked here is the host the HTTP client fetches from."""
    if (
        len(url) > 2048
        or any(ch in url for ch in "\\@")
        or any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url)
    ):
        raise SnsRejected(f"{what} {url[:200]!r} is not a plain https URL")
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
    except ValueError as exc:
        raise SnsRejected(f"{what} {url[:200]!r} is not a URL") from exc
    if parts.scheme != "https":
        raise SnsRejected(f"{what} must be an https URL, got {url!r}")
    if not re.fullmatch(host_pattern, host):
        raise SnsRejected(f"{what} host {host!r} does not match the SNS host pattern {host_pattern!r}")


def check_timestamp(fields: Mapping[str, str], now: datetime.datetime, max_age_seconds: float) -> None:
    """Refuse a message whose signed ``Timestamp`` is older than *max_age_seconds* (+ skew) or ahead."""
    text = fields.get("Timestamp", "")
    try:
        stamp = datetime.datetime.fromisoformat(text)
    except ValueError as exc:
        raise SnsRejected(f"SNS Timestamp {text[:40]!r} is not an ISO 8601 time") from exc
    if stamp.tzinfo is None:
        raise SnsRejected(f"SNS Timestamp {text[:40]!r} has no time zone")
    age = (now - stamp).total_seconds()
    if age > max_age_seconds + CLOCK_SKEW_SECONDS:
        raise SnsRejected(
            f"SNS message is {int(age)} s old, older than the limit of {int(max_age_seconds)} s "
            "(CRAWLJOB_SNS_MAX_AGE_SECONDS): a replay, or a clock far off"
        )
    if age < -CLOCK_SKEW_SECONDS:
        raise SnsRejected(f"SNS Timestamp {text[:40]!r} is in the future")


def certificate_names(certificate: x509.Certificate) -> list[str]:
    """The subject's common names and the DNS names of the certificate."""
    names = [
        str(attribute.value) for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return names
    return names + list(extension.value.get_values_for_type(x509.DNSName))


def check_subject(certificate: x509.Certificate, subject_pattern: str) -> None:
    """Refuse a certificate none of whose names matches *subject_pattern* (full match)."""
    names = certificate_names(certificate)
    if not any(re.fullmatch(subject_pattern, name) for name in names):
        raise SnsRejected(
            f"the signing certificate names {names[:3]!r}, not SNS (pattern {subject_pattern!r})"
        )


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
    certificate: x509.Certificate | None
    error: Exception | None
    expires: float


class CertificateCache:
    """Signing certificates by URL, fetched on first use and kept for *ttl* seconds.

    A failed fetch is remembered for *failure_ttl* seconds, so a bad URL costs one fetch, not
    one per message. Each URL has its own lock (dropped when no one waits on it) and at most
    *max_fetches* run at once.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        host_pattern: str = DEFAULT_CERT_HOST_PATTERN,
        ssl_context: ssl.SSLContext | None = None,
        ttl: float = 3600.0,
        max_entries: int = 64,
        timeout: float = 3.0,
        subject_pattern: str = DEFAULT_CERT_SUBJECT_PATTERN,
        failure_ttl: float = 30.0,
        max_fetches: int = 8,
    ) -> None:
        self.session = session
        self.host_pattern = host_pattern
        self.subject_pattern = subject_pattern
        self.ssl_context = ssl_context
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self.max_entries = max_entries
        self.timeout = timeout
        self._entries: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}  # requests holding or awaiting each URL's lock
        self._fetching = asyncio.Semaphore(max_fetches)
        self.fetches = 0

    def _fresh(self, url: str) -> x509.Certificate | None:
        entry = self._entries.get(url)
        if entry is None or entry.expires <= time.monotonic():
            return None
        if entry.error is not None:
            raise type(entry.error)(str(entry.error))
        return entry.certificate

    async def get(self, url: str) -> x509.Certificate:
        """The certificate at *url* (checked against the host pattern), from the cache if fresh."""
        check_url(url, self.host_pattern, "SigningCertURL")
        certificate = self._fresh(url)
        if certificate is not None:
            return certificate
        lock = self._locks.setdefault(url, asyncio.Lock())
        self._users[url] = self._users.get(url, 0) + 1
        try:
            async with lock:
                certificate = self._fresh(url)
                if certificate is not None:
                    return certificate
                try:
                    async with self._fetching:
                        certificate = await self._fetch(url)
                    check_subject(certificate, self.subject_pattern)
                except (SnsRejected, SnsUnavailable) as exc:
                    self._remember(url, _Cached(None, exc, time.monotonic() + self.failure_ttl))
                    raise
                self._remember(url, _Cached(certificate, None, time.monotonic() + self.ttl))
                return certificate
        finally:
            self._users[url] -= 1
            if not self._users[url]:
                del self._users[url], self._locks[url]

    def _remember(self, url: str, entry: _Cached) -> None:
        if url not in self._entries and len(self._entries) >= self.max_entries:
            self._entries.pop(next(iter(self._entries)))
        self._entries[url] = entry

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
