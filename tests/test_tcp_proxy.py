"""The outage proxy resets what it says it resets: the outage tests depend on it."""

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from _tcp_proxy import tcp_proxy


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A server that reads a request and never answers (the port it listens on)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed at teardown
                return
            held.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    yield int(server.getsockname()[1])
    server.close()
    for conn in held:
        conn.close()


def test_a_connection_waiting_for_an_answer_is_reset_when_the_proxy_goes_down(silent_server: int) -> None:
    """A client mid-request sees ``connection reset`` at once, not silence until its own timeout.

    The proxy's pump thread is blocked reading that connection; a plain ``close()`` from
    another thread neither wakes it nor sends the reset (a writer of the outage test once
    waited 240 s on such a connection).
    """
    with tcp_proxy(f"http://127.0.0.1:{silent_server}") as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        client.sendall(b"GET / HTTP/1.1\r\n\r\n")
        time.sleep(0.2)  # the request has reached the server; both pump threads are in recv()
        started = time.monotonic()
        with proxy.outage(0.2), pytest.raises(ConnectionResetError):
            client.recv(1)
        assert time.monotonic() - started < 5
        client.close()


def test_new_connections_are_refused_during_the_outage_and_accepted_after(silent_server: int) -> None:
    with tcp_proxy(f"http://127.0.0.1:{silent_server}") as proxy:
        with proxy.outage(0.5), pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5).close()
