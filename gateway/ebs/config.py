"""The EBS's settings, from the environment under the names the Twitch tooling documents.

  STREAMSIGHT_TWITCH_EXTENSION_SECRET   the extension secret, base64 as Twitch's console shows it;
                                        unset: the /ebs routes answer 404 (no extension served)
  STREAMSIGHT_TWITCH_EXTENSION_ORIGIN   the origin the extension's pages run on (CORS); default
                                        https://<client id>.ext-twitch.tv when the client id is set
  STREAMSIGHT_TWITCH_CLIENT_ID          the extension's client id (enables the CORS default)
  STREAMSIGHT_TWITCH_EBS_RATE_PER_S     requests a second per viewer after the burst (default 1)
  STREAMSIGHT_TWITCH_EBS_BURST          requests a viewer may make at once (default 10)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.ebs.jwt import decode_secret


@dataclass(frozen=True)
class EbsConfig:
    secret: bytes = b""
    client_id: str = ""
    origin: str = ""  # the one origin CORS lets in; empty: none
    rate_per_s: float = 1.0
    burst: int = 10

    @property
    def enabled(self) -> bool:
        return bool(self.secret)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "EbsConfig":
        """ValueError naming the variable when one is malformed."""
        env = os.environ if environ is None else environ
        secret_text = env.get("STREAMSIGHT_TWITCH_EXTENSION_SECRET", "")
        try:
            secret = decode_secret(secret_text) if secret_text else b""
        except ValueError as exc:
            raise ValueError(f"STREAMSIGHT_TWITCH_EXTENSION_SECRET: {exc}") from None
        client_id = env.get("STREAMSIGHT_TWITCH_CLIENT_ID", "").strip()
        origin = env.get("STREAMSIGHT_TWITCH_EXTENSION_ORIGIN", "").strip().rstrip("/")
        if not origin and client_id:
            origin = f"https://{client_id}.ext-twitch.tv"
        if origin and not origin.startswith(("https://", "http://")):
            raise ValueError("STREAMSIGHT_TWITCH_EXTENSION_ORIGIN: an origin is scheme://host[:port], e.g. https://abc.ext-twitch.tv")
        try:
            rate = float(env.get("STREAMSIGHT_TWITCH_EBS_RATE_PER_S", "1"))
            burst = int(env.get("STREAMSIGHT_TWITCH_EBS_BURST", "10"))
        except ValueError:
            raise ValueError("STREAMSIGHT_TWITCH_EBS_RATE_PER_S / _BURST: numbers, e.g. 1 and 10") from None
        if rate <= 0 or burst < 1:
            raise ValueError("STREAMSIGHT_TWITCH_EBS_RATE_PER_S must be > 0 and STREAMSIGHT_TWITCH_EBS_BURST >= 1")
        return cls(secret, client_id, origin, rate, burst)
