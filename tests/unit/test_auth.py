"""Webhook authentication: none, bearer token (and Basic), HMAC-SHA256 of the body."""

from __future__ import annotations

import base64

import pytest

from crawljob.receiver import auth
from crawljob.receiver.auth import AuthError, AuthSettings

BODY = b'{"bucket": "b", "object": {"key": "k"}}'


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_mode_none_accepts_anything() -> None:
    auth.check(AuthSettings("none"), {}, BODY)


@pytest.mark.parametrize(
    "header", ["Bearer s3cret", "bearer s3cret", "Bearer  s3cret ", basic("sns", "s3cret")]
)
def test_token_mode_accepts_the_token(header: str) -> None:
    auth.check(AuthSettings("token", token="s3cret"), {"Authorization": header}, BODY)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": ""}, 401),
        ({"Authorization": "Token s3cret"}, 401),
        ({"Authorization": "Basic !!!"}, 401),
        ({"Authorization": "Bearer wrong"}, 403),
        ({"Authorization": "Bearer s3cre"}, 403),
        ({"Authorization": "Bearer"}, 403),
        ({"Authorization": basic("s3cret", "")}, 403),
        ({"Authorization": "Bearer s3cret\u00e9"}, 403),
    ],
)
def test_token_mode_refuses_missing_or_wrong_tokens(headers: dict[str, str], status: int) -> None:
    with pytest.raises(AuthError) as caught:
        auth.check(AuthSettings("token", token="s3cret"), headers, BODY)
    assert caught.value.status == status


def test_hmac_mode_accepts_the_signature_with_or_without_prefix() -> None:
    settings = AuthSettings("hmac", hmac_key="k3y")
    signature = auth.sign("k3y", BODY)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    auth.check(settings, {auth.SIGNATURE_HEADER: signature}, BODY)
    auth.check(settings, {auth.SIGNATURE_HEADER: signature.removeprefix("sha256=").upper()}, BODY)


@pytest.mark.parametrize(
    ("header", "body", "status"),
    [
        (None, BODY, 401),
        ("", BODY, 401),
        ("sha256=00", BODY, 403),
        (auth.sign("other", BODY), BODY, 403),
        (auth.sign("k3y", BODY), BODY + b" ", 403),
        ("sha1=" + "0" * 40, BODY, 403),
    ],
)
def test_hmac_mode_refuses_missing_or_wrong_signatures(header: str | None, body: bytes, status: int) -> None:
    headers = {} if header is None else {auth.SIGNATURE_HEADER: header}
    with pytest.raises(AuthError) as caught:
        auth.check(AuthSettings("hmac", hmac_key="k3y"), headers, body)
    assert caught.value.status == status


@pytest.mark.parametrize(
    ("mode", "token", "key", "message"),
    [
        ("token", None, None, "needs a token"),
        ("hmac", None, None, "needs a key"),
        ("basic", None, None, "must be one of"),
    ],
)
def test_settings_refuse_a_mode_without_its_secret(
    mode: str, token: str | None, key: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        AuthSettings(mode, token, key)
