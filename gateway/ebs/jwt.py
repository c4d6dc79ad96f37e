"""Checking a Twitch extension JWT (HS256, signed with the extension's secret), written here
with hmac/base64/json so that nothing but HS256 can ever be accepted.

Twitch gives the secret base64-encoded; the key is its decoded bytes. A token is accepted only
when its header says exactly `alg: HS256`, its signature matches, `exp` lies in the future,
`role` is one a viewer's extension carries and `channel_id` and `opaque_user_id` are present.
Every refusal is the same `InvalidToken` (the caller answers 401 with no detail); the reason is
kept on the exception for logs and metrics only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

ROLES = frozenset({"broadcaster", "moderator", "viewer"})
MAX_TOKEN_BYTES = 4096  # Twitch's tokens are a few hundred bytes


class InvalidToken(Exception):
    """The token is missing, malformed, forged, expired or not a viewer's; `reason` is for logs."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Viewer:
    """What an accepted token says about its bearer."""

    channel_id: str
    opaque_user_id: str
    role: str
    user_id: str  # empty unless the viewer shared their identity
    exp: int


def decode_secret(secret_b64: str) -> bytes:
    """The signing key from the base64 text Twitch shows; ValueError when it is not base64."""
    try:
        key = base64.b64decode(secret_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the Twitch extension secret is not base64 (copy it as the developer console shows it)") from None
    if not key:
        raise ValueError("the Twitch extension secret is empty")
    return key


def _b64url(text: str) -> bytes:
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in text):
        raise InvalidToken("segment is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("segment is not base64url") from None


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_object(raw: bytes, what: str) -> dict:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidToken(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidToken(f"{what} is not a JSON object")
    return value


def sign(claims: dict, key: bytes, header: dict | None = None) -> str:
    """An HS256 token of `claims` (for tests and for the EBS's own PubSub calls)."""
    head = b64url_encode(json.dumps(header or {"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url_encode(signature)}"


def verify(token: str, key: bytes, now: float | None = None) -> Viewer:
    """The viewer a token names, or InvalidToken."""
    if not token or len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken("missing or oversized token")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("not three segments")
    head_b64, body_b64, signature_b64 = parts
    header = _json_object(_b64url(head_b64), "header")
    # The algorithm is fixed here, never taken from the token: `none`, RS256 and the rest are refused.
    if header.get("alg") != "HS256":
        raise InvalidToken("alg is not HS256")
    expected = hmac.new(key, f"{head_b64}.{body_b64}".encode("ascii"), hashlib.sha256).digest()
    # Compared as text in its one canonical spelling: base64 lets a last character's spare bits
    # vary without changing the bytes, and a token is either exactly what was signed or refused.
    if not hmac.compare_digest(b64url_encode(expected).encode(), signature_b64.encode("ascii", "replace")):
        raise InvalidToken("bad signature")
    claims = _json_object(_b64url(body_b64), "payload")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise InvalidToken("exp missing")
    if exp <= (time.time() if now is None else now):
        raise InvalidToken("expired")
    role = claims.get("role")
    if role not in ROLES:
        raise InvalidToken("role is not a viewer's")
    channel_id, opaque = claims.get("channel_id"), claims.get("opaque_user_id")
    if not isinstance(channel_id, str) or not channel_id.isdigit() or len(channel_id) > 32:
        raise InvalidToken("channel_id missing")
    if not isinstance(opaque, str) or not opaque or len(opaque) > 128:
        raise InvalidToken("opaque_user_id missing")
    user_id = claims.get("user_id")
    return Viewer(channel_id, opaque, role, user_id if isinstance(user_id, str) else "", int(exp))
