"""`python -m services.glitch`: glitch frames and decoder signals -> glitch incident events."""

from services.glitch.service import GlitchService
from streamsight.service import run_service

run_service(GlitchService)
