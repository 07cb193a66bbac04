"""A TCP forwarder on 127.0.0.1 that can make a service disappear: for the outage tests.

:class:`TcpProxy` listens on a port of its own and forwards every connection to a target.
:meth:`TcpProxy.outage` makes the target unreachable through it, the way a store that goes
away looks to a client: the listening socket is closed (new connections are refused) and
every open connection is reset (``SO_LINGER`` 0, so the peer gets ``RST``, not an orderly
close). After the outage the proxy listens again on the same port.

Threads, not asyncio: the proxy lives inside the test process while the writers run in
processes of their own, and a thread per direction is plenty for a few dozen connections.
"""

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

#: How often the accept loop wakes to see whether it should stop.
_ACCEPT_POLL_S = 0.1


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset (no FIN handshake): the peer sees ``connection reset``."""
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # close() alone does not wake a pump thread blocked in recv() on this socket, and while that
    # call holds the socket the kernel neither frees it nor sends the reset: the client would
    # wait on a silent connection until its own timeout (measured: a writer hung for 240 s).
    # shutdown(SHUT_RD) wakes the reader (recv returns b"") without sending anything; the
    # close() that follows, with linger 0, then sends the RST.
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    sock.close()


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``; :meth:`outage` refuses and resets for a while."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._stop = threading.Event()
        self.connections_reset = 0
        self.connections_accepted = 0

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "TcpProxy":
        """Listen (on a free port the first time, the same port afterwards) and accept in a thread."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(_ACCEPT_POLL_S)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        self._stop = threading.Event()
        self._accepting = threading.Thread(target=self._accept_loop, args=(listener, self._stop), daemon=True)
        self._accepting.start()
        return self

    def _accept_loop(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # the listener was closed
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._conns.update((client, upstream))
                self.connections_accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """Copy ``src`` to ``dst`` until either side ends; then close both."""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                known = src in self._conns
                self._conns.discard(src)
                self._conns.discard(dst)
            if known:
                for sock in (src, dst):
                    with suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    sock.close()

    def go_down(self) -> None:
        """Stop listening (connections are refused) and reset every open connection."""
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._accepting is not None:
            self._accepting.join(timeout=5)
        with self._lock:
            conns, self._conns = self._conns, set()
        for sock in conns:
            _reset(sock)
        self.connections_reset += len(conns)

    def come_back(self) -> None:
        """Listen again on the same port."""
        self.start()

    @contextmanager
    def outage(self, seconds: float) -> Iterator[None]:
        """Down for ``seconds`` (from entering), then back; the body runs while it is down."""
        self.go_down()
        back_at = time.monotonic() + seconds
        try:
            yield
        finally:
            time.sleep(max(0.0, back_at - time.monotonic()))
            self.come_back()

    def close(self) -> None:
        """Stop for good."""
        self.go_down()


@contextmanager
def tcp_proxy(endpoint: str) -> Iterator[TcpProxy]:
    """A started :class:`TcpProxy` in front of ``http://host:port``; closed on exit."""
    host, port = endpoint.removeprefix("http://").rsplit(":", 1)
    proxy = TcpProxy(host, int(port)).start()
    try:
        yield proxy
    finally:
        proxy.close()
