"""Entry point: `python -m services.fusion`."""

from services.fusion.service import FusionService
from streamsight.service import run_service

if __name__ == "__main__":
    run_service(FusionService)
