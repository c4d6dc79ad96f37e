"""nats-server on ports it picked itself: a port taken before the server binds it (another
test worker's free port, in a parallel run) costs a retry on new ports, not a failed start."""

import socket

import pytest

from streamsight.natsd import NatsExited, NatsServer


def _occupy(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def test_a_picked_port_taken_meanwhile_is_picked_again(tmp_path):
    server = NatsServer(tmp_path / "nats")
    first = server.port
    with _occupy(first):
        with server:
            assert server.port != first
            assert server.healthy()


def test_a_given_port_taken_is_an_error(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        taken = probe.getsockname()[1]
    with _occupy(taken):
        server = NatsServer(tmp_path / "nats", port=taken)
        with pytest.raises(NatsExited, match="exited with code"):
            server.start()
        assert server.port == taken, "a port the caller chose is never changed"


def test_a_restart_keeps_the_ports_clients_know(tmp_path):
    server = NatsServer(tmp_path / "nats")
    with server:
        port = server.port
        server.kill()
        with _occupy(port):
            with pytest.raises(NatsExited):
                server.start()
        server.start()
        assert server.port == port and server.healthy()


def test_each_test_worker_picks_ports_from_a_slice_of_its_own(monkeypatch):
    """Two pytest-xdist workers pick from disjoint slices, so neither can take a port the other
    picked and has not bound yet (conftest sets the slice from the worker's number)."""
    from streamsight.natsd import PORT_SLICE_VARIABLE, distinct_free_ports, free_port_range

    monkeypatch.delenv(PORT_SLICE_VARIABLE, raising=False)
    whole = free_port_range()
    if whole[1] - whole[0] <= 2000:
        pytest.skip(f"the ports below the kernel's ephemeral range are too few to slice: {whole}")
    slices = []
    for k in (0, 1):
        monkeypatch.setenv(PORT_SLICE_VARIABLE, f"{k}/2")
        low, high = free_port_range()
        assert whole[0] <= low < high <= whole[1]
        assert all(low <= p < high for p in distinct_free_ports(20))
        slices.append((low, high))
    assert slices[0][1] <= slices[1][0], "the two workers' slices do not overlap"


def test_a_malformed_port_slice_is_named(monkeypatch):
    from streamsight.natsd import PORT_SLICE_VARIABLE, free_port_range

    if free_port_range()[1] - free_port_range()[0] <= 2000:
        pytest.skip("the ports below the kernel's ephemeral range are too few to slice")
    for bad in ("2/2", "x/2", "1"):
        monkeypatch.setenv(PORT_SLICE_VARIABLE, bad)
        with pytest.raises(ValueError, match=f"{PORT_SLICE_VARIABLE}='{bad}'"):
            free_port_range()
