"""A TCP relay that counts connections: what a server in front of which it stands was sent, at most at once.

Each listening address forwards every connection it accepts to a real server (nginx, in the TLS tests) and
counts how many are open at once, per listening address and in all. One thread and one selector serve every
socket, and in each wake-up the connections the client closed are counted out before new ones are counted in,
accepting one connection per listener per wake-up: a client that closes one connection before opening the
next (nmap's script threads do) is never counted twice. Used to show how many handshakes nmap's scripts make
at once; the relay adds no limit of its own (backlog 256, nothing refused).
"""

from __future__ import annotations

import selectors
import socket
import threading
from dataclasses import dataclass, field
from types import TracebackType

Address = tuple[str, int]


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket
    listen: Address
    closed: bool = False


@dataclass
class Counts:
    peak: dict[Address, int] = field(default_factory=dict)  # most connections open at once, per listener
    accepted: dict[Address, int] = field(default_factory=dict)  # connections accepted, per listener
    peak_total: int = 0  # most connections open at once, all listeners together


class CountingRelay:
    def __init__(self, routes: dict[Address, Address]) -> None:
        """`routes`: listening address -> the server's address."""
        self.counts = Counts()
        self._open: dict[Address, int] = {}
        self._open_total = 0
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        for listen, target in routes.items():
            server = socket.create_server(listen, backlog=256)
            server.setblocking(False)
            self._selector.register(server, selectors.EVENT_READ, (listen, target))
            self._open[listen] = self.counts.peak[listen] = self.counts.accepted[listen] = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CountingRelay:
        self._thread.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            events = self._selector.select(0.1)
            for key, _ in sorted(events, key=lambda event: isinstance(event[0].data, tuple)):  # closes first
                if isinstance(key.data, tuple):
                    self._accept(key.fileobj, *key.data)  # type: ignore[arg-type]
                else:
                    self._forward(key.fileobj, key.data)  # type: ignore[arg-type]

    def _accept(self, server: socket.socket, listen: Address, target: Address) -> None:
        try:
            client, _ = server.accept()
        except BlockingIOError:
            return
        upstream = socket.create_connection(target, timeout=10)
        pair = _Pair(client, upstream, listen)
        for sock in (client, upstream):
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, pair)
        self._open[listen] += 1
        self._open_total += 1
        self.counts.accepted[listen] += 1
        self.counts.peak[listen] = max(self.counts.peak[listen], self._open[listen])
        self.counts.peak_total = max(self.counts.peak_total, self._open_total)

    def _forward(self, sock: socket.socket, pair: _Pair) -> None:
        if pair.closed:
            return
        other = pair.upstream if sock is pair.client else pair.client
        try:
            data = sock.recv(65536)
            if data:
                other.setblocking(True)
                other.sendall(data)
                other.setblocking(False)
                return
        except OSError:
            pass
        pair.closed = True  # either side closed (or failed): the connection is over
        for end in (pair.client, pair.upstream):
            self._selector.unregister(end)
            end.close()
        self._open[pair.listen] -= 1
        self._open_total -= 1
