"""SNS signatures (versions 1 and 2) and URL checks, with a key and certificate made here."""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from crawljob.receiver import sns
from crawljob.receiver.sns import SnsRejected

EVENTS = Path(__file__).parent.parent / "data" / "events"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate_for(key: rsa.RSAPrivateKey, days: int = 30, start_days: int = -1) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.us-west-2.amazonaws.com")])
    now = datetime.datetime.now(tz=datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=start_days))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def certificate(key: rsa.RSAPrivateKey) -> x509.Certificate:
    return certificate_for(key)


def signed(fields: Mapping[str, str], key: rsa.RSAPrivateKey, version: str) -> dict[str, str]:
    """Sign as SNS does: the canonical string, PKCS#1 v1.5, SHA1 (v1) or SHA256 (v2)."""
    message = dict(fields, SignatureVersion=version)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(sns.signing_string(message), padding.PKCS1v15(), algorithm)
    message["Signature"] = base64.b64encode(signature).decode()
    return message


def envelope(name: str) -> dict[str, str]:
    result: dict[str, str] = json.loads((EVENTS / name).read_text())
    return result


def test_signing_string_of_a_notification_follows_the_documented_order() -> None:
    fields = {
        "Type": "Notification",
        "MessageId": "m",
        "TopicArn": "t",
        "Subject": "s",
        "Message": "hi\nthere",
        "Timestamp": "ts",
        "SignatureVersion": "1",
        "Signature": "x",
        "UnsubscribeURL": "u",
    }
    assert (
        sns.signing_string(fields)
        == b"Message\nhi\nthere\nMessageId\nm\nSubject\ns\nTimestamp\nts\nTopicArn\nt\nType\nNotification\n"
    )
    del fields["Subject"]
    assert (
        sns.signing_string(fields)
        == b"Message\nhi\nthere\nMessageId\nm\nTimestamp\nts\nTopicArn\nt\nType\nNotification\n"
    )


def test_signing_string_of_a_confirmation_includes_subscribe_url_and_token() -> None:
    fields = envelope("sns-subscription-confirmation.json")
    names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    expected = "".join(f"{name}\n{fields[name]}\n" for name in names)
    assert sns.signing_string(fields) == expected.encode()


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize(
    "name",
    ["sns-notification.json", "sns-subscription-confirmation.json", "sns-unsubscribe-confirmation.json"],
)
def test_signatures_verify(
    name: str, version: str, key: rsa.RSAPrivateKey, certificate: x509.Certificate
) -> None:
    sns.verify_with_certificate(signed(envelope(name), key, version), certificate)


@pytest.mark.parametrize("field", ["Message", "MessageId", "Timestamp", "TopicArn", "Subject"])
def test_tampered_messages_fail(field: str, key: rsa.RSAPrivateKey, certificate: x509.Certificate) -> None:
    message = signed(envelope("sns-notification.json"), key, "2")
    message[field] = message[field] + "x"
    with pytest.raises(SnsRejected, match="does not verify"):
        sns.verify_with_certificate(message, certificate)


def test_unsigned_fields_may_change(key: rsa.RSAPrivateKey, certificate: x509.Certificate) -> None:
    message = signed(envelope("sns-notification.json"), key, "1")
    message["UnsubscribeURL"] = "https://elsewhere.example/"
    sns.verify_with_certificate(message, certificate)


def test_version_mismatch_fails(key: rsa.RSAPrivateKey, certificate: x509.Certificate) -> None:
    message = signed(envelope("sns-notification.json"), key, "1")
    message["SignatureVersion"] = "2"
    with pytest.raises(SnsRejected):
        sns.verify_with_certificate(message, certificate)


def test_another_key_fails(key: rsa.RSAPrivateKey) -> None:
    other = certificate_for(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(SnsRejected, match="does not verify"):
        sns.verify_with_certificate(signed(envelope("sns-notification.json"), key, "2"), other)


@pytest.mark.parametrize(
    ("version", "signature", "message"),
    [
        ("3", None, "unsupported SNS SignatureVersion"),
        ("1", "not base64!", "not base64"),
    ],
)
def test_bad_version_or_signature_fails(
    version: str, signature: str | None, message: str, key: rsa.RSAPrivateKey, certificate: x509.Certificate
) -> None:
    fields = signed(envelope("sns-notification.json"), key, "1")
    fields["SignatureVersion"] = version
    if signature is not None:
        fields["Signature"] = signature
    with pytest.raises(SnsRejected, match=message):
        sns.verify_with_certificate(fields, certificate)


def test_expired_certificate_fails(key: rsa.RSAPrivateKey) -> None:
    expired = certificate_for(key, days=-1, start_days=-10)
    with pytest.raises(SnsRejected, match="not valid now"):
        sns.verify_with_certificate(signed(envelope("sns-notification.json"), key, "1"), expired)


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
    ],
)
def test_sns_hosts_pass(url: str) -> None:
    sns.check_url(url, sns.DEFAULT_CERT_HOST_PATTERN, "SigningCertURL")


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-west-2.amazonaws.com/cert.pem",
        "https://sns.us-west-2.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.us-west-2.amazonaws.com/cert.pem",
        "https://sns.us-west-2.amazonaws.com@evil.example/cert.pem",
        "https://s3.amazonaws.com/cert.pem",
        "file:///etc/passwd",
        "",
        "https://[::1/cert.pem",
    ],
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(SnsRejected):
        sns.check_url(url, sns.DEFAULT_CERT_HOST_PATTERN, "SigningCertURL")


# ---- issue 13, finding 1 and 7: exact hosts, the certificate's subject, the message's age ----


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("sns.us-east-1.amazonaws.com", True),
        ("sns.eu-central-2.amazonaws.com", True),
        ("sns.us-gov-west-1.amazonaws.com", True),
        ("sns.cn-north-1.amazonaws.com.cn", True),
        ("sns.cn-northwest-1.amazonaws.com.cn", True),
        ("sns.s3.amazonaws.com", False),  # an S3 bucket named "sns": anyone can serve a file there
        ("sns.amazonaws.com", False),
        ("sns.us-east-1.amazonaws.com.evil.example", False),
        ("evil-sns.us-east-1.amazonaws.com", False),
        ("sns.us-east-1.amazonaws.cn", False),
    ],
)
def test_default_host_pattern_admits_exactly_sns_hosts(host: str, allowed: bool) -> None:
    url = f"https://{host}/SimpleNotificationService-abc.pem"
    if allowed:
        sns.check_url(url, sns.DEFAULT_CERT_HOST_PATTERN, "SigningCertURL")
    else:
        with pytest.raises(SnsRejected, match="does not match"):
            sns.check_url(url, sns.DEFAULT_CERT_HOST_PATTERN, "SigningCertURL")


def test_certificate_subject_must_name_sns(key: rsa.RSAPrivateKey) -> None:
    sns.check_subject(certificate_for(key), sns.DEFAULT_CERT_SUBJECT_PATTERN)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker.example")])
    now = datetime.datetime.now(tz=datetime.UTC)
    other = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(SnsRejected, match=r"attacker\.example"):
        sns.check_subject(other, sns.DEFAULT_CERT_SUBJECT_PATTERN)


NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("timestamp", "accepted"),
    [
        ("2026-12-02T12:00:00.000Z", True),
        ("2026-12-02T11:00:00.000Z", True),
        ("2026-12-02T10:55:01.000Z", True),  # an hour and a little skew
        ("2026-12-02T10:54:59.000Z", False),
        ("2001-09-09T01:46:40.000Z", False),
        ("2026-12-02T12:04:59Z", True),
        ("2026-12-02T12:05:01Z", False),
        ("2026-12-02T12:00:00", False),  # no zone
        ("not a time", False),
        ("", False),
    ],
)
def test_message_age_is_bounded(timestamp: str, accepted: bool) -> None:
    fields = {"Timestamp": timestamp}
    if accepted:
        sns.check_timestamp(fields, NOW, sns.DEFAULT_MAX_AGE_SECONDS)
    else:
        with pytest.raises(SnsRejected):
            sns.check_timestamp(fields, NOW, sns.DEFAULT_MAX_AGE_SECONDS)


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-1.amazonaws.com@evil.example/cert.pem",
        "https://evil.example\\@sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com\t.evil.example/cert.pem",
        "https://user:pw@sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com /cert.pem",
    ],
)
def test_urls_where_parsers_differ_are_refused(url: str) -> None:
    with pytest.raises(SnsRejected):
        sns.check_url(url, sns.DEFAULT_CERT_HOST_PATTERN, "SigningCertURL")
