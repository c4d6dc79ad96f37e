"""`python -m services.audio`: the audio service (ingest's audio -> loudness, spectral and tag features per window)."""

import sys

from services.audio.service import AudioService, open_tagger
from services.audio.settings import AudioSettings
from services.audio.tagger import TaggerError
from streamsight.config import ConfigError, load_settings
from streamsight.service import run_service

# run_service turns bad settings into a message and exit code 2. A tagger file that exists but
# does not load or run is a configuration error too, so it is tried here first, before serving
# (the service opens it again in start(): a second load at start is the price of that check).
try:
    open_tagger(load_settings(AudioSettings))
except ConfigError:
    pass  # run_service reports it
except TaggerError as exc:
    print(f"streamsight-audio: invalid tagger (STREAMSIGHT_AUDIO_TAGGER_PATH / STREAMSIGHT_AUDIO_TAGGER_KIND): {exc}", file=sys.stderr)
    sys.exit(2)

run_service(AudioService)
