"""`python -m services.vision`: flow and CNN frames from NATS -> one vision feature record per window."""

from services.vision.service import VisionService
from streamsight.service import run_service

run_service(VisionService)
