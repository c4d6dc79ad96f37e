"""The Twitch extension JWT check (gateway/ebs/jwt.py) and the per-viewer rate limit, with tokens
this test signs: only HS256 with the right key, in date, for a viewer's role and a channel."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from gateway.ebs.config import EbsConfig
from gateway.ebs.jwt import InvalidToken, b64url_encode, decode_secret, sign, verify
from gateway.ebs.ratelimit import RateLimiter

SECRET_B64 = base64.b64encode(b"extension-secret-for-tests-32byt").decode()
KEY = decode_secret(SECRET_B64)


def _changed_signature_char(token: str, at: int) -> str:
    """`token` with one signature character replaced by another that decodes to the same high bits
    where it can (the last one's spare bits) and to other bits elsewhere."""
    chars = list(token)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    old = alphabet.index(chars[at])
    chars[at] = alphabet[old ^ 1] if at == -1 else alphabet[(old + 1) % 64]
    return "".join(chars)


def claims(**over) -> dict:
    doc = {"exp": int(time.time()) + 600, "opaque_user_id": "U123", "user_id": "", "channel_id": "4242", "role": "viewer",
           "pubsub_perms": {"listen": ["broadcast"]}}
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


def test_a_valid_token_names_its_viewer():
    viewer = verify(sign(claims(), KEY), KEY)
    assert (viewer.channel_id, viewer.opaque_user_id, viewer.role) == ("4242", "U123", "viewer")
    for role in ("broadcaster", "moderator"):
        assert verify(sign(claims(role=role), KEY), KEY).role == role


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="missing"),
        pytest.param("abc", id="one-segment"),
        pytest.param(sign(claims(), b"another key"), id="forged-signature"),
        pytest.param(sign(claims(exp=int(time.time()) - 1), KEY), id="expired"),
        pytest.param(sign(claims(exp=None), KEY), id="no-exp"),
        pytest.param(sign(claims(exp="9999999999"), KEY), id="exp-as-text"),
        pytest.param(sign(claims(role="external"), KEY), id="external-role"),
        pytest.param(sign(claims(role=None), KEY), id="no-role"),
        pytest.param(sign(claims(channel_id=None), KEY), id="no-channel"),
        pytest.param(sign(claims(channel_id="../x"), KEY), id="odd-channel"),
        pytest.param(sign(claims(opaque_user_id=None), KEY), id="no-opaque-user"),
        pytest.param(sign(claims(), KEY, {"alg": "HS512", "typ": "JWT"}), id="other-alg-header"),
        pytest.param(_changed_signature_char(sign(claims(), KEY), -10), id="signature-changed"),
        pytest.param(_changed_signature_char(sign(claims(), KEY), -1), id="signature-last-char-respelled"),
        pytest.param(sign(claims(), KEY) + ".x", id="four-segments"),
        pytest.param("a=b." + sign(claims(), KEY).split(".", 1)[1], id="not-base64url"),
        pytest.param("x" * 5000, id="oversized"),
    ],
)
def test_bad_tokens_are_refused(token):
    with pytest.raises(InvalidToken):
        verify(token, KEY)


def test_alg_none_and_a_payload_changed_after_signing_are_refused():
    body = b64url_encode(json.dumps(claims(role="broadcaster")).encode())
    none_header = b64url_encode(b'{"alg":"none","typ":"JWT"}')
    for token in (f"{none_header}.{body}.", f"{none_header}.{body}"):
        with pytest.raises(InvalidToken):
            verify(token, KEY)
    # An HS256 header with a signature made by "none" (empty) or over another payload.
    head = b64url_encode(b'{"alg":"HS256","typ":"JWT"}')
    with pytest.raises(InvalidToken):
        verify(f"{head}.{body}.", KEY)
    good = sign(claims(), KEY).split(".")
    with pytest.raises(InvalidToken):
        verify(f"{good[0]}.{body}.{good[2]}", KEY)
    # RS256 with the secret used as an HMAC key (the classic confusion) is refused by its header.
    rs_head = b64url_encode(b'{"alg":"RS256","typ":"JWT"}')
    sig = b64url_encode(hmac.new(KEY, f"{rs_head}.{body}".encode(), hashlib.sha256).digest())
    with pytest.raises(InvalidToken):
        verify(f"{rs_head}.{body}.{sig}", KEY)


def test_the_secret_is_base64_as_twitch_shows_it():
    assert EbsConfig.from_environ({"STREAMSIGHT_TWITCH_EXTENSION_SECRET": SECRET_B64}).secret == b"extension-secret-for-tests-32byt"
    with pytest.raises(ValueError, match="STREAMSIGHT_TWITCH_EXTENSION_SECRET"):
        EbsConfig.from_environ({"STREAMSIGHT_TWITCH_EXTENSION_SECRET": "not base64 !"})
    config = EbsConfig.from_environ({"STREAMSIGHT_TWITCH_CLIENT_ID": "abc123"})
    assert not config.enabled and config.origin == "https://abc123.ext-twitch.tv"
    with pytest.raises(ValueError, match="ORIGIN"):
        EbsConfig.from_environ({"STREAMSIGHT_TWITCH_EXTENSION_ORIGIN": "abc.ext-twitch.tv"})


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_is_per_viewer_and_refills():
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=clock)
    assert [limiter.allow("a")[0] for _ in range(4)] == [True, True, True, False]
    allowed, wait = limiter.allow("a")
    assert not allowed and wait == pytest.approx(0.5)
    assert limiter.allow("b")[0], "another viewer has a bucket of their own"
    clock.now += 0.5
    assert limiter.allow("a")[0] and not limiter.allow("a")[0]


def test_rate_limit_memory_is_bounded():
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=1.0, burst=2, max_viewers=100, clock=clock)
    for n in range(1000):
        limiter.allow(f"viewer{n}")
        clock.now += 0.01
    assert len(limiter) <= 100
    limiter.allow("busy")
    limiter.allow("busy")
    assert not limiter.allow("busy")[0], "a viewer in the table keeps its state"
