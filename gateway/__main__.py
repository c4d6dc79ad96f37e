"""`python -m gateway`: the public gRPC API of streamsight."""

from gateway.service import GatewayService
from streamsight.service import run_service

run_service(GatewayService)
