"""Stream health beside corruption: the checks a broadcast monitor makes.

black and freeze (picture), silence, loudness, audio_gap and no_audio (sound), av_drift and
format_change (the signal), each as START/UPDATE/END incidents. `monitor.StreamHealth` holds
one stream's checks and is fed the MEDIA messages the glitch service already consumes plus
ingest's audio chunks; the modules beside it are the measures (loudness.py, picture.py) and
the incident bookkeeping (incidents.py).
"""
