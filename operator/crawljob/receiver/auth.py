"""Webhook authentication: none, a bearer token, or an HMAC-SHA256 of the raw body (pure).

- ``token``: ``Authorization: Bearer <token>``; HTTP Basic with the token as the password is
  accepted too, because SNS raw delivery and EventBridge API destinations can only send that
  (or a fixed header).
- ``hmac``: ``X-Crawljob-Signature: sha256=<hex HMAC-SHA256 of the body>`` (bare hex accepted).

Comparisons are constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

MODES = ("none", "token", "hmac")
SIGNATURE_HEADER = "X-Crawljob-Signature"


class AuthError(Exception):
    """The request is not authenticated; *status* is 401 (no credentials) or 403 (wrong ones)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class AuthSettings:
    """How requests must authenticate; secrets already read (from env or a mounted file)."""

    mode: str = "none"
    token: str | None = None
    hmac_key: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"auth mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == "token" and not self.token:
            raise ValueError(
                "auth mode token needs a token (CRAWLJOB_AUTH_TOKEN or CRAWLJOB_AUTH_TOKEN_FILE)"
            )
        if self.mode == "hmac" and not self.hmac_key:
            raise ValueError("auth mode hmac needs a key (CRAWLJOB_HMAC_KEY or CRAWLJOB_HMAC_KEY_FILE)")


def sign(key: str, body: bytes) -> str:
    """The signature header value for *body*: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


def check(settings: AuthSettings, headers: Mapping[str, str], body: bytes) -> None:
    """Raise AuthError unless the request carries the credentials *settings* ask for."""
    if settings.mode == "token":
        _check_token(settings.token or "", headers.get("Authorization", ""))
    elif settings.mode == "hmac":
        _check_hmac(settings.hmac_key or "", headers.get(SIGNATURE_HEADER, ""), body)


def _check_token(expected: str, authorization: str) -> None:
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if not scheme:
        raise AuthError(401, "missing credentials: send Authorization: Bearer <token>")
    if scheme.lower() == "bearer":
        presented = credentials
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as exc:
            raise AuthError(401, "malformed Basic credentials") from exc
        presented = decoded.partition(":")[2]
    else:
        raise AuthError(401, f"unsupported authorization scheme {scheme[:20]!r}: use Bearer")
    if not hmac.compare_digest(presented.encode("utf-8", "replace"), expected.encode("utf-8")):
        raise AuthError(403, "invalid token")


def _check_hmac(key: str, header: str, body: bytes) -> None:
    presented = header.strip()
    if not presented:
        raise AuthError(401, f"missing {SIGNATURE_HEADER} header: send sha256=<hex HMAC-SHA256 of the body>")
    if not presented.lower().startswith("sha256="):
        presented = "sha256=" + presented
    expected = sign(key, body)
    if not hmac.compare_digest(presented.lower().encode("utf-8", "replace"), expected.encode("utf-8")):
        raise AuthError(403, "invalid body signature")
