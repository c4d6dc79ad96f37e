"""Audio service domain code: loudness, spectral features and sound-event tagging per 10 s window."""
