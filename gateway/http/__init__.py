"""The gateway's HTTP side on aiohttp: the dashboard, its JSON API and SSE, clips, and the
Twitch extension's backend (EBS). `HttpServer` is what the gateway service starts."""

from gateway.http.server import HttpServer

__all__ = ["HttpServer"]
