"""Gateway service: the public API, and the registry kept current from services' status events."""

from __future__ import annotations

import ipaddress

from nats.aio.msg import Msg

from gateway.api import StreamSightApi
from gateway.ebs.config import EbsConfig
from gateway.http import HttpServer
from gateway.registry import Registry, StreamMissing, apply_state
from gateway.settings import GatewaySettings
from streamsight import events, subjects
from streamsight.bus import BadMessage
from streamsight.config import ConfigError, env_name
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from streamsight.rpc import Servicer
from streamsight.service import Service


class GatewayService(Service):
    name = "gateway"
    Settings = GatewaySettings

    async def start(self) -> None:
        check_exposure(self.settings)
        self.registry = Registry(await self.bus.kv(subjects.REGISTRY_BUCKET))
        self.api = StreamSightApi(self.settings, self.bus, self.registry)
        self.bus.consume("gateway-registry", subjects.event("status"), self.on_status, subjects.EVENTS_STREAM)
        self.web: HttpServer | None = None
        if self.settings.http_enabled:
            try:
                ebs = EbsConfig.from_environ()
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            self.web = HttpServer(self.api, self.settings.grpc_host, self.settings.http_port, self.settings.auth_token, ebs=ebs)
            port = await self.web.start()
            self.log.info("web page serving", url=f"http://{self.settings.grpc_host}:{port}/")

    async def stop(self) -> None:
        if self.web is not None:
            await self.web.stop()

    def servicers(self) -> list[Servicer]:
        name = gateway_pb2.DESCRIPTOR.services_by_name["StreamSight"].full_name
        return [Servicer(gateway_pb2_grpc.add_StreamSightServicer_to_server, self.api, name)]

    async def on_status(self, msg: Msg) -> None:
        """Apply a service's status event to the registry (the gateway's own are already applied)."""
        try:
            status = events.decode(msg.headers, msg.data).status
        except events.BadEvent as exc:
            raise BadMessage(str(exc)) from None
        if status.reporter == "gateway":
            return

        def change(stream: gateway_pb2.Stream) -> None:
            error = status.detail if status.state == common_pb2.STREAM_STATE_FAILED else ""
            if status.state != common_pb2.STREAM_STATE_UNSPECIFIED:
                apply_state(stream, status.state, error)
            stream.media_time_s = max(stream.media_time_s, status.media_time_s)
            if status.duration_s:
                stream.duration_s = status.duration_s

        try:
            await self.registry.update(status.stream_id, change)
        except StreamMissing:  # a stream started without the gateway (a service used on its own)
            self.log.debug("status for a stream the gateway does not know", stream_id=status.stream_id)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def check_exposure(settings: GatewaySettings) -> None:
    """Refuse to serve beyond this host without a token, unless told so explicitly.

    Without auth anyone who reaches the gateway can make the server fetch URLs and read clips.
    """
    if settings.auth_token or settings.insecure_no_auth or is_loopback(settings.grpc_host):
        return
    raise ConfigError(
        f"the gateway would serve on {settings.grpc_host} (not loopback) without auth: set {env_name('', 'auth_token')} "
        f"(clients send it as a bearer token), bind {env_name('', 'grpc_host')}=127.0.0.1, or set "
        f"{env_name('gateway', 'insecure_no_auth')}=true to accept that anyone who reaches it may use it"
    )
