"""`python -m services.chat`: the chat service (Twitch IRC and replays -> chat features, sentiment, forecast)."""

from services.chat.service import ChatService
from streamsight.service import run_service

run_service(ChatService)
