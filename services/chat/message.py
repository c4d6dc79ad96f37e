"""The chat message every reader produces: text plus who, when (media time) and which emotes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One chat line.

    `media_time` is seconds since the stream's start (replay: the log's offset; live:
    wall clock at receipt minus the stream's start). `emotes` holds the text of every
    emote occurrence the source marked (IRC tag ranges, rechat fragments), in order;
    the sentiment scorer also finds emotes by token, so an empty tuple is fine.
    """

    media_time: float
    user: str
    text: str
    emotes: tuple[str, ...] = ()
    display_name: str = ""
    msg_id: str = ""
    sent_ts_ms: int | None = None
    badges: dict[str, str] = field(default_factory=dict)
    is_action: bool = False
