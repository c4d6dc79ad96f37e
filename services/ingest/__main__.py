"""`python -m services.ingest`: sources -> frames, audio, signals and windows on NATS; clips over gRPC."""

from services.ingest.service import IngestService
from streamsight.service import run_service

run_service(IngestService)
