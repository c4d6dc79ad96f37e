"""NATS with users: a client without (or with wrong) credentials is refused, and each service may
publish only its own subjects, on a real nats-server (the embedded one of `up` included).

The permissions are those of streamsight.natsauth; here each service's user does what the
service does (provision streams, publish with acks, pull and acknowledge, read events and KV),
and a forged Highlight event is refused and never stored.
"""

from __future__ import annotations

import asyncio
import io
import json
import stat
from pathlib import Path

import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from streamsight import natsauth, subjects
from streamsight.app.supervisor import CREDENTIALS_FILE, Supervisor
from streamsight.bus import Bus
from streamsight.config import SECTIONS
from streamsight.natsd import NatsServer


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A nats-server whose clients must log in, with the platform's users."""
    folder = tmp_path_factory.mktemp("nats-auth")
    passwords = natsauth.credentials(folder / "users.json", [natsauth.ADMIN, natsauth.READER, *SECTIONS])
    server = NatsServer(folder, log_file=folder / "nats.log", users=natsauth.users(passwords)).start()
    yield server
    server.stop()


async def _connect(url: str, errors: list[str] | None = None):
    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(str(exc))

    return await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False, error_cb=on_error)


async def _stored(server: NatsServer, subject: str) -> int:
    admin = await Bus.connect(server.url, "admin-check")
    try:
        return await admin.backlog(subjects.EVENTS_STREAM, subject)
    finally:
        await admin.close()


def test_credentials_are_private_random_and_kept(tmp_path):
    first = natsauth.credentials(tmp_path / "a.json", ["admin", "vision"])
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o600
    assert natsauth.credentials(tmp_path / "a.json", ["admin", "vision"]) == first, "reused, not remade"
    other = natsauth.credentials(tmp_path / "b.json", ["admin", "vision"])
    assert other["vision"] != first["vision"] and len(first["vision"]) >= 32
    more = natsauth.credentials(tmp_path / "a.json", ["admin", "vision", "audio"])
    assert more["vision"] == first["vision"] and more["audio"] not in first.values()


def test_the_config_file_that_holds_passwords_is_private(secured):
    config = secured.data_dir / "nats-server.conf"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert secured.users["vision"].password in config.read_text()


async def test_a_client_without_or_with_wrong_credentials_is_refused(secured):
    for url in (secured.address, natsauth.with_credentials(secured.address, "fusion", "not-the-password")):
        with pytest.raises(Exception) as refused:
            nc = await _connect(url)
            await nc.close()
        assert "authorization" in repr(refused.value).lower() or isinstance(refused.value, nats.errors.NoServersError), refused.value


async def test_a_forged_highlight_from_another_service_is_refused_and_never_stored(secured):
    setup = await Bus.connect(secured.url, "setup")
    await setup.ensure_streams()
    await setup.close()
    subject = subjects.event("highlight", "forged")
    errors: list[str] = []
    vision = await _connect(secured.url_for("vision"), errors)
    try:
        with pytest.raises((nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError)):
            await vision.jetstream(timeout=2).publish(subject, b'{"clip_url": "https://evil.example/x.mp4"}')
        await asyncio.sleep(0.2)
    finally:
        await vision.close()
    assert any("permissions violation" in e.lower() and subject in e for e in errors), errors
    assert await _stored(secured, subject) == 0

    fusion = await _connect(secured.url_for("fusion"))  # the highlight's own publisher may
    try:
        await fusion.jetstream(timeout=5).publish(subjects.event("highlight", "real"), b"{}")
    finally:
        await fusion.close()
    assert await _stored(secured, subjects.event("highlight", "real")) == 1


@pytest.mark.parametrize("service", list(SECTIONS))
async def test_each_service_publishes_its_own_subjects_and_no_other(secured, service):
    bus = await Bus.connect(secured.url_for(service), service)
    errors: list[str] = []
    try:
        await bus.ensure_streams()  # every service provisions the streams at start
        for subject in natsauth.service_subjects(service):
            if subject.startswith("$"):
                continue  # KV and object store: exercised below through their APIs
            concrete = subject.replace(">", "0.s1") if subject.endswith(">") else subject
            ack = await bus.js.publish(concrete, b"x", timeout=5)
            assert ack.seq > 0, concrete
        foreign = subjects.features("vision", "s1") if service != "vision" else subjects.event("highlight", "s1")
        rogue = await _connect(secured.url_for(service), errors)
        try:
            with pytest.raises((nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError)):
                await rogue.jetstream(timeout=1).publish(foreign, b"forged")
            await asyncio.sleep(0.1)
        finally:
            await rogue.close()
        assert any("permissions violation" in e.lower() for e in errors), errors
    finally:
        await bus.close()


async def test_what_the_services_read_works_under_their_users(secured):
    """Pull consumers with acks (a stage), ordered consumers (the gateway's event reads), KV."""
    setup = await Bus.connect(secured.url, "setup")
    await setup.ensure_streams()
    await setup.close()
    vision = await Bus.connect(secured.url_for("vision"), "vision")
    fusion = await Bus.connect(secured.url_for("fusion"), "fusion")
    gateway = await Bus.connect(secured.url_for("gateway"), "gateway")
    try:
        got: list[str] = []
        done = asyncio.Event()

        async def on_feature(msg) -> None:
            got.append(msg.subject)
            done.set()

        fusion.consume("fusion-auth-test", subjects.features("vision", "pull1"), on_feature, subjects.FEATURES_STREAM)
        await vision.publish(subjects.features("vision", "pull1"), b"record", "pull1:vision:0", kind="features")
        await asyncio.wait_for(done.wait(), 30)
        assert got == [subjects.features("vision", "pull1")]
        await asyncio.sleep(0.5)
        assert await fusion.consumer_pending(subjects.FEATURES_STREAM, "fusion-auth-test") == 0, "acknowledged"

        await fusion.js.publish(subjects.event("score", "read1"), b"score", timeout=5)
        read = await gateway.read_all(subjects.EVENTS_STREAM, subjects.event("*", "read1"))
        assert [m.data for m in read] == [b"score"]

        registry = await gateway.kv(subjects.REGISTRY_BUCKET)
        await registry.put("read1", b"registered")
        assert (await registry.get("read1")).value == b"registered"
        state = await fusion.kv("fusion")
        await state.put("m.read1", b"{}")
        assert await state.keys() == ["m.read1"]
        with pytest.raises(Exception):  # the gateway's registry is the gateway's
            await (await fusion.js.key_value(subjects.REGISTRY_BUCKET)).put("read1", b"forged", )
        assert (await registry.get("read1")).value == b"registered"
    finally:
        for bus in (vision, fusion, gateway):
            await bus.close()


async def test_up_gives_each_service_its_own_login_and_refuses_strangers(tmp_path):
    sup = Supervisor(tmp_path / "var", free_ports=True, out=io.StringIO(), only=["no-such-service"])
    await sup.start()
    try:
        passwords = json.loads((tmp_path / "var" / CREDENTIALS_FILE).read_text())
        assert set(passwords) == {natsauth.ADMIN, natsauth.READER, *SECTIONS}
        assert stat.S_IMODE((tmp_path / "var" / CREDENTIALS_FILE).stat().st_mode) == 0o600
        for name in SECTIONS:
            url = sup.environment(SECTIONS[name])["STREAMSIGHT_NATS_URL"]
            assert url == natsauth.with_credentials(sup.nats.address, name, passwords[name])
        state = sup.state()
        assert state["nats_url"] == sup.nats.address and passwords["admin"] not in json.dumps(state)
        with pytest.raises(Exception):
            await (await _connect(sup.nats.address)).close()
        errors: list[str] = []
        glitch = await _connect(sup.nats_url("glitch"), errors)
        try:
            await glitch.publish(subjects.event("status", "live1"), b'{"state": "ENDED"}')  # a forged end of stream
            await glitch.flush()
            await asyncio.sleep(0.2)
        finally:
            await glitch.close()
        assert any("permissions violation" in e.lower() for e in errors), errors
    finally:
        await sup.stop()
    # The same passwords after a restart of `up`.
    again = Supervisor(tmp_path / "var", free_ports=True, out=io.StringIO(), only=["no-such-service"])
    assert again.nats.users["vision"].password == passwords["vision"]


async def test_the_reader_follows_events_as_the_readme_shows_and_may_do_nothing_else(secured):
    """README "Subscribing to events on NATS": a durable push consumer on highlights, acked."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    setup = await Bus.connect(secured.url, "setup")
    await setup.ensure_streams()
    await setup.close()
    fusion = await _connect(secured.url_for("fusion"))
    await fusion.jetstream(timeout=5).publish(subjects.event("highlight", "readme1"), b"h1")
    await fusion.close()
    errors: list[str] = []
    nc = await _connect(secured.url_for(natsauth.READER), errors)
    try:
        js = nc.jetstream(timeout=3)
        sub = await js.subscribe("streamsight.events.v1.highlight.*.readme1", durable="my-backend",
                                 config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))  # fmt: skip
        msg = await sub.next_msg(timeout=10)
        assert msg.data == b"h1"
        await msg.ack_sync(timeout=3)
        with pytest.raises((nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError)):
            await js.publish(subjects.event("highlight", "readme1"), b"forged")
        with pytest.raises(Exception):
            await js.delete_stream(subjects.EVENTS_STREAM)
        with pytest.raises(Exception):
            await js.add_consumer(subjects.MEDIA_STREAM, ConsumerConfig(durable_name="peek"))
    finally:
        await nc.close()
    assert sum("permissions violation" in e.lower() for e in errors) >= 3, errors
    assert await _stored(secured, subjects.event("highlight", "readme1")) == 1


def test_up_grants_the_buckets_the_settings_name(tmp_path, monkeypatch):
    """A renamed bucket setting is the bucket the service's login may write, not the default's."""
    monkeypatch.setenv("STREAMSIGHT_INGEST_RESUME_BUCKET", "ingest_resume_lab")
    monkeypatch.setenv("STREAMSIGHT_CHAT_RESUME_BUCKET", "chat_resume_lab")
    monkeypatch.setenv("STREAMSIGHT_FUSION_STATE_BUCKET", "fusion_lab")
    sup = Supervisor(tmp_path / "var", free_ports=True, out=io.StringIO(), only=["no-such-service"])
    granted = {name: sup.nats.users[name].publish for name in ("ingest", "chat", "fusion")}
    assert "$KV.ingest_resume_lab.>" in granted["ingest"] and "$KV.ingest_streams.>" not in granted["ingest"]
    assert "$KV.chat_resume_lab.>" in granted["chat"] and "$KV.chat_streams.>" not in granted["chat"]
    assert "$KV.fusion_lab.>" in granted["fusion"]
