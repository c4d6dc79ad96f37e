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
