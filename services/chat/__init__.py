"""Chat service domain: Twitch IRC and replay readers, emote-aware sentiment, windows, forecast."""
