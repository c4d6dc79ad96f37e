"""Twitch IRC dialect: the parser, the token bucket and the client against a local server."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import pytest

from services.chat.client import ChatClear, ChatNotice, IrcAuthError, IrcConfig, TwitchIrcClient
from services.chat.irc import (
    IrcParseError,
    TokenBucket,
    escape_tag_value,
    parse_emote_ranges,
    parse_line,
    privmsg_to_chat,
    unescape_tag_value,
)
from services.chat.message import ChatMessage

# A real-shaped PRIVMSG: an emoji (one code point, four UTF-8 bytes) before the emotes.
TEXT = "\U0001F600 Kappa héllo Kappa PogChamp"
EMOTES_TAG = "25:2-6,14-18/88:20-27"
PRIVMSG = (
    "@badge-info=subscriber/8;badges=subscriber/6,premium/1;color=#1E90FF;display-name=Viewer\\sOne;"
    f"emotes={EMOTES_TAG};id=b34ccfc7-4977-403a-8a94-33c6bac34fb8;mod=0;tmi-sent-ts=1507246572675 "
    f":viewer1!viewer1@viewer1.tmi.twitch.tv PRIVMSG #somechannel :{TEXT}"
)


def test_parse_tags_prefix_command_params():
    msg = parse_line(PRIVMSG + "\r\n")
    assert msg.command == "PRIVMSG"
    assert msg.prefix == "viewer1!viewer1@viewer1.tmi.twitch.tv"
    assert msg.nick == "viewer1"
    assert msg.params == ["#somechannel", TEXT]
    assert msg.tags["display-name"] == "Viewer One"
    assert msg.tags["badge-info"] == "subscriber/8" and msg.tags["mod"] == "0"
    assert msg.tags["tmi-sent-ts"] == "1507246572675"


def test_tag_escaping_round_trip():
    value = "a;b c\\d\r\ne"
    assert escape_tag_value(value) == "a\\:b\\sc\\\\d\\r\\ne"
    assert unescape_tag_value(escape_tag_value(value)) == value
    assert unescape_tag_value("abc\\") == "abc"  # trailing lone backslash dropped
    assert unescape_tag_value("a\\bc") == "abc"  # unknown escape -> the character


def test_emote_ranges_count_code_points():
    ranges = parse_emote_ranges(EMOTES_TAG, TEXT)
    assert [TEXT[s : e + 1] for _, s, e in ranges] == ["Kappa", "Kappa", "PogChamp"]
    assert [r[0] for r in ranges] == ["25", "25", "88"]
    # A range past the end of the text is dropped rather than trusted.
    assert parse_emote_ranges("25:0-4,40-44", "Kappa") == [("25", 0, 4)]


def test_privmsg_to_chat_message():
    chat = privmsg_to_chat(parse_line(PRIVMSG), media_time=12.5)
    assert chat.emotes == ("Kappa", "Kappa", "PogChamp")
    assert chat.badges == {"subscriber": "6", "premium": "1"}
    assert chat.display_name == "Viewer One"
    assert chat.sent_ts_ms == 1507246572675
    assert chat.msg_id == "b34ccfc7-4977-403a-8a94-33c6bac34fb8"
    assert chat.media_time == 12.5 and chat.user == "viewer1"


def test_action_message():
    chat = privmsg_to_chat(parse_line(":a!a@a PRIVMSG #c :\x01ACTION waves Kappa\x01"), 0.0)
    assert chat.is_action and chat.text == "waves Kappa"


@pytest.mark.parametrize("line", ["", "@a=b", ":prefix.only", "   ", ":p :trailing"])
def test_malformed_lines_raise(line):
    with pytest.raises(IrcParseError):
        parse_line(line)


def test_token_bucket_limits_rate():
    now = [0.0]
    bucket = TokenBucket(20, 30.0, clock=lambda: now[0])
    assert all(bucket.try_acquire() for _ in range(20))
    assert not bucket.try_acquire()
    assert bucket.delay() == pytest.approx(1.5)  # 20 per 30 s refills one token in 1.5 s
    now[0] += 1.5
    assert bucket.try_acquire() and not bucket.try_acquire()


def _client(server, **kw) -> TwitchIrcClient:
    cfg = IrcConfig(host="127.0.0.1", port=server.port, tls=False, backoff_initial_s=0.01, backoff_max_s=0.05, **kw)
    return TwitchIrcClient("#SomeChannel", stream_start=1000.0, config=cfg, clock=lambda: 1042.0)


async def _next(it, timeout=5.0):
    return await asyncio.wait_for(it.__anext__(), timeout)


async def test_client_login_messages_ping_notice_clear(irc_server):
    client = _client(irc_server)
    it = client.events()
    first = asyncio.ensure_future(_next(it))
    await irc_server.wait_joined(0)
    sent = irc_server.received[0]
    assert "CAP REQ :twitch.tv/tags twitch.tv/commands" in sent
    nick = next(line for line in sent if line.startswith("NICK "))[5:]
    assert nick.startswith("justinfan") and nick[9:].isdigit()
    assert "JOIN #somechannel" in sent
    assert not any(line.startswith("PASS") for line in sent)

    await irc_server.send(PRIVMSG)
    chat = await first
    assert isinstance(chat, ChatMessage)
    assert chat.emotes == ("Kappa", "Kappa", "PogChamp")
    assert chat.media_time == pytest.approx(42.0)  # wall clock minus the stream's start

    # The client reads while someone waits for its next event (pull, so a slow consumer
    # applies backpressure); the PING is answered inside that wait.
    pending = asyncio.ensure_future(_next(it))
    await irc_server.send("PING :tmi.twitch.tv")
    assert await irc_server.wait_line("PONG") == "PONG :tmi.twitch.tv"

    await irc_server.send("@msg-id=msg_channel_suspended :tmi.twitch.tv NOTICE #somechannel :This channel has been suspended.")
    notice = await pending
    assert isinstance(notice, ChatNotice) and notice.notice_id == "msg_channel_suspended"

    await irc_server.send("@ban-duration=600;room-id=1;target-user-id=2 :tmi.twitch.tv CLEARCHAT #somechannel :ronni")
    clear = await _next(it)
    assert isinstance(clear, ChatClear) and (clear.kind, clear.target_user, clear.duration_s) == ("user", "ronni", 600.0)
    await irc_server.send("@room-id=1 :tmi.twitch.tv CLEARCHAT #somechannel")
    assert (await _next(it)).kind == "all"
    await irc_server.send("@login=ronni;target-msg-id=abc-123 :tmi.twitch.tv CLEARMSG #somechannel :bad words")
    cm = await _next(it)
    assert (cm.kind, cm.target_msg_id) == ("message", "abc-123")

    # A garbage line is counted and skipped; the stream goes on.
    await irc_server.send("@onlytags")
    await irc_server.send(":a!a@a PRIVMSG #somechannel :still here")
    assert (await _next(it)).text == "still here"
    assert client.malformed_lines == 1
    await client.close()
    await it.aclose()


async def test_client_reconnect_command_and_dropped_connection(irc_server):
    client = _client(irc_server)
    it = client.events()
    pending = asyncio.ensure_future(_next(it))
    await irc_server.wait_joined(0)
    await irc_server.send("RECONNECT")
    await irc_server.wait_joined(1)  # reconnected and joined again
    await irc_server.send(":a!a@a PRIVMSG #somechannel :after reconnect")
    assert (await pending).text == "after reconnect"

    pending = asyncio.ensure_future(_next(it))
    irc_server.drop()
    await irc_server.wait_joined(2)  # reconnected after the server dropped it
    await irc_server.send(":b!b@b PRIVMSG #somechannel :after drop")
    assert (await pending).text == "after drop"
    assert client.connections == 3
    await client.close()
    await it.aclose()


async def test_client_oauth_login_and_rejected_token(irc_server):
    client = _client(irc_server, nick="MyBot", token="abc123")
    it = client.events()
    pending = asyncio.ensure_future(_next(it))
    await irc_server.wait_joined(0)
    assert irc_server.received[0][0] == "PASS oauth:abc123"
    assert "NICK mybot" in irc_server.received[0]
    await client.say("hello chat")
    assert await irc_server.wait_line("PRIVMSG") == "PRIVMSG #somechannel :hello chat"
    pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pending
    await client.close()
    await it.aclose()

    bad = _client(irc_server, nick="MyBot", token="oauth:bad")
    with pytest.raises(IrcAuthError, match="authentication failed"):
        await _next(bad.events())


async def test_client_over_tls(tls_irc_server, self_signed_cert):
    server = tls_irc_server
    ctx = ssl.create_default_context(cafile=str(self_signed_cert[0]))
    cfg = IrcConfig(host="127.0.0.1", port=server.port, tls=True, ssl_context=ctx, backoff_initial_s=0.01)
    client = TwitchIrcClient("somechannel", stream_start=0.0, config=cfg)
    it = client.events()
    pending = asyncio.ensure_future(_next(it))
    await server.wait_joined(0)
    await server.send(PRIVMSG)
    chat = await pending
    assert chat.emotes == ("Kappa", "Kappa", "PogChamp") and chat.media_time > 0
    await client.close()
    await it.aclose()
