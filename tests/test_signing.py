"""Signing against stdlib hmac, the original's vectors and the Standard Webhooks library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from oqronkit import (
    ConfigurationError,
    sign_standard_webhook,
    sign_webhook_payload,
    verify_standard_webhook,
    verify_webhook_signature,
)
from oqronkit._core import Signer, signature_header

BODY = '{"event":"test.event","foo":"bar"}'
SECRET = "test-secret-key-for-hmac"
TS = 1625097600000
NOW = TS / 1000


def test_original_vectors() -> None:
    assert sign_webhook_payload(BODY, SECRET, TS) == (
        "t=1625097600000,v1=a41af425896e8c64e452179fb23f646011cac465eb62551847f941c5d6ac8ada"
    )
    assert sign_webhook_payload(BODY, SECRET, TS, "sha512") == (
        "t=1625097600000,v1=297f7516e0cb2e23d7fb8ccd4011b2e8b10dd322d88cabc1501a8b38cb8e3161"
        "ae44ea4913cb268cda94701626a9dedb53028805bec00c6490ee49ec417938d9"
    )


@given(
    body=st.binary(max_size=300),
    secret=st.binary(min_size=1, max_size=150),
    ts=st.integers(0, 2**63 - 1),
    algorithm=st.sampled_from(["sha256", "sha512"]),
)
def test_agrees_with_stdlib_hmac(body: bytes, secret: bytes, ts: int, algorithm: str) -> None:
    expected = hmac.new(secret, b"%d." % ts + body, getattr(hashlib, algorithm)).hexdigest()
    assert Signer(secret, algorithm).sign(body, ts) == expected
    assert sign_webhook_payload(body, secret, ts, algorithm) == f"t={ts},v1={expected}"


@given(text=st.text(max_size=100))
def test_str_bodies_are_signed_as_utf8(text: str) -> None:
    assert sign_webhook_payload(text, SECRET, TS) == sign_webhook_payload(text.encode(), SECRET, TS)


def test_one_v1_per_secret_and_each_verifies() -> None:
    header = sign_webhook_payload(BODY, ["new-secret", SECRET], TS)
    assert header.count(",v1=") == 2
    assert verify_webhook_signature(header, BODY, SECRET, now=NOW)
    assert verify_webhook_signature(header, BODY, "new-secret", now=NOW)
    assert verify_webhook_signature(header, BODY, ["other", "new-secret"], now=NOW)
    assert not verify_webhook_signature(header, BODY, "other", now=NOW)


@given(
    body=st.binary(max_size=400),
    secrets=st.lists(st.binary(min_size=1, max_size=150), min_size=1, max_size=15),
    ts=st.integers(0, 2**63 - 1),
    sha512_at=st.none() | st.integers(0, 14),
)
def test_many_secrets_agree_with_stdlib_hmac(
    body: bytes, secrets: list[bytes], ts: int, sha512_at: int | None
) -> None:
    # Many SHA-256 secrets take the side-by-side path (rust/shared_sha256.rs); an SHA-512 one
    # among them sends the header down the one-at-a-time path.
    algorithms = ["sha512" if i == sha512_at else "sha256" for i in range(len(secrets))]
    message = b"%d." % ts + body
    expected = [
        hmac.new(s, message, getattr(hashlib, a)).hexdigest()
        for s, a in zip(secrets, algorithms, strict=True)
    ]
    signers = [Signer(s, a) for s, a in zip(secrets, algorithms, strict=True)]
    assert signature_header(body, ts, signers) == ",".join(
        [f"t={ts}", *(f"v1={e}" for e in expected)]
    )


def test_a_batch_of_secrets_matches_one_by_one() -> None:
    signers = [Signer(f"secret-{i}") for i in range(50)]
    header = signature_header(b"x" * 100_000, TS, signers)  # large enough to release the GIL
    parts = header.split(",")
    assert parts[0] == f"t={TS}"
    assert parts[1:] == [f"v1={s.sign(b'x' * 100_000, TS)}" for s in signers]


VALID = sign_webhook_payload(BODY, SECRET, TS)
SIG = VALID.split(",v1=")[1]


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (VALID, True),
        (f"t={TS}, v1={SIG}", True),  # a space after the comma is allowed
        (f"v1={SIG},t={TS}", True),  # any order
        (f"t={TS},v1={'0' * 64},v1={SIG}", True),  # any v1 may match
        (f"t={TS},v2=abc,v1={SIG}", True),  # unknown schemes are ignored
        (f"t={TS}abc,v1={SIG}", False),  # the original's parseInt leniency is gone
        (f"t={TS},v1={SIG}zz", False),  # ... and its lenient hex
        (f"t={TS},v1={SIG}0", False),
        (f"t={TS},v1={SIG.upper()}", False),
        (f"t={TS},v1={SIG[:-2]}", False),
        (f"t={TS},t={TS},v1={SIG}", False),
        (f"t=+{TS},v1={SIG}", False),
        (f"t={TS}", False),
        (f"v1={SIG}", False),
        (f"t={TS},,v1={SIG}", False),
        ("", False),
        ("garbage", False),
    ],
)
def test_verifier_is_strict(header: str, ok: bool) -> None:
    assert verify_webhook_signature(header, BODY, SECRET, now=NOW) is ok


def test_tolerance_window_is_symmetric_and_in_seconds() -> None:
    assert verify_webhook_signature(VALID, BODY, SECRET, now=NOW + 300)
    assert verify_webhook_signature(VALID, BODY, SECRET, now=NOW - 300)
    assert not verify_webhook_signature(VALID, BODY, SECRET, now=NOW + 300.002)
    assert not verify_webhook_signature(VALID, BODY, SECRET, now=NOW - 300.002)
    assert verify_webhook_signature(VALID, BODY, SECRET, tolerance=3600, now=NOW + 3000)


def test_default_timestamp_and_now_are_the_current_time() -> None:
    header = sign_webhook_payload(BODY, SECRET)
    assert abs(int(header[2:].split(",")[0]) - time.time() * 1000) < 5000
    assert verify_webhook_signature(header, BODY, SECRET)


def test_body_bytes_must_match_exactly() -> None:
    assert not verify_webhook_signature(VALID, BODY + " ", SECRET, now=NOW)
    assert not verify_webhook_signature(VALID, BODY, SECRET, "sha512", now=NOW)


def test_configuration_errors_are_raised_not_returned() -> None:
    with pytest.raises(ConfigurationError, match="algorithm"):
        sign_webhook_payload(BODY, SECRET, TS, "md5")
    with pytest.raises(ConfigurationError, match="empty"):
        sign_webhook_payload(BODY, "", TS)
    with pytest.raises(ConfigurationError, match="at least one"):
        verify_webhook_signature(VALID, BODY, [], now=NOW)
    with pytest.raises(ConfigurationError, match="tolerance"):
        verify_webhook_signature(VALID, BODY, SECRET, tolerance=-1, now=NOW)
    with pytest.raises(TypeError, match="body must be bytes or str"):
        sign_webhook_payload(123, SECRET, TS)  # type: ignore[arg-type]


def test_signer_repr_hides_the_secret() -> None:
    assert repr(Signer("super-secret")) == "Signer(sha256)"
    assert "super-secret" not in repr(Signer(b"super-secret", "sha512"))


# ------------------------------------------------------------------ Standard Webhooks

WHSEC = "whsec_" + base64.b64encode(b"k" * 32).decode()


def test_standard_output_verifies_with_the_standardwebhooks_library() -> None:
    body = '{"type":"order.created","data":{"id":1}}'
    headers = sign_standard_webhook("msg_1", body, WHSEC)
    assert Webhook(WHSEC).verify(body, headers) == {"type": "order.created", "data": {"id": 1}}
    tampered = dict(headers, **{"webhook-id": "msg_2"})
    with pytest.raises(WebhookVerificationError):
        Webhook(WHSEC).verify(body, tampered)


def test_standard_library_output_verifies_with_ours() -> None:
    body = '{"hello":"world"}'
    now = datetime.now(tz=UTC)
    headers = {
        "webhook-id": "msg_abc",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(WHSEC).sign("msg_abc", now, body),
    }
    assert verify_standard_webhook(headers, body, WHSEC)
    upper = {k.upper(): v for k, v in headers.items()}
    assert verify_standard_webhook(upper, body.encode(), [WHSEC])
    assert not verify_standard_webhook(headers, body + " ", WHSEC)
    assert not verify_standard_webhook({"webhook-id": "msg_abc"}, body, WHSEC)


def test_standard_rotation_tolerance_and_unpadded_secrets() -> None:
    other = "whsec_" + base64.b64encode(b"o" * 24).decode().rstrip("=")
    headers = sign_standard_webhook("msg_9", "{}", [other, WHSEC], timestamp=1_000_000)
    assert headers["webhook-signature"].count("v1,") == 2
    assert verify_standard_webhook(headers, "{}", WHSEC, now=1_000_000 + 300)
    assert verify_standard_webhook(headers, "{}", other, now=1_000_000 - 300)
    assert not verify_standard_webhook(headers, "{}", WHSEC, now=1_000_000 + 301)
    with pytest.raises(ConfigurationError, match="base64"):
        sign_standard_webhook("msg", "{}", "whsec_***")
    with pytest.raises(ConfigurationError, match="message id"):
        sign_standard_webhook("", "{}", WHSEC)


def test_a_missing_header_is_not_authentic() -> None:
    # What a framework's `headers.get(...)` gives for a request without it.
    assert verify_webhook_signature(None, BODY, SECRET, now=NOW) is False
