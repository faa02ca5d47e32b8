"""A TCP proxy on 127.0.0.1 in front of one test server: counts round trips and cuts connections on cue.

``flights`` counts the client's request flights over every connection: a
flight starts when the client sends after the server last spoke (or first),
so however libpq splits its writes, one flight is one round trip. The state
is updated before the bytes are forwarded, so a reply is always counted
before the client can react to it.

Faults, for the failover tests:

* ``sever_idle()``: every connection open now is cut when its client next
  sends, and that data is *not* forwarded: the client wrote, the server
  never saw a byte (a connection that died silently while idle);
* ``lose_next_reply()``: the client's next flight reaches the server, and the
  connection is cut before the server's reply gets back (a COMMIT that
  committed, whose answer was lost);
* ``refuse(n)``: the next ``n`` new connections are closed as soon as they
  are accepted (a server that is down).

Only loopback addresses; threads end when the proxy is closed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit, urlunsplit


class _Link:
    """One client connection and its server connection."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.last = "server"  # who spoke last
        self.sever = False  # cut at the client's next data, forwarding nothing
        self.lose_reply = False  # forward the client's next flight, then cut before the reply

    def close(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class CountingProxy:
    """Forward 127.0.0.1:<port> to the server of ``url``; ``url_for(url)`` is the same URL through the proxy."""

    def __init__(self, url: str) -> None:
        target = urlsplit(url)
        self.target = (target.hostname or "127.0.0.1", target.port or 5432)
        self.flights = 0
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._lose_next = False
        self._refuse = 0
        self.refused = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def url_for(self, url: str) -> str:
        parts = urlsplit(url)
        netloc = f"{parts.username}@127.0.0.1:{self.port}" if parts.username else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def sever_idle(self) -> None:
        with self._lock:
            for link in self._links:
                link.sever = True

    def lose_next_reply(self) -> None:
        with self._lock:
            self._lose_next = True

    def refuse(self, connections: int) -> None:
        with self._lock:
            self._refuse = connections

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refuse = self._refuse > 0
                if refuse:
                    self._refuse -= 1
                    self.refused += 1
            if refuse:
                client.close()
                continue
            server = socket.create_connection(self.target)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
            threading.Thread(target=self._pump, args=(link, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(link, False), daemon=True).start()

    def _pump(self, link: _Link, upstream: bool) -> None:
        source, sink = (link.client, link.server) if upstream else (link.server, link.client)
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                link.close()
                return
            with self._lock:
                if upstream:
                    if link.sever:
                        cut = True
                    else:
                        cut = False
                        if link.last != "client":
                            self.flights += 1
                            if self._lose_next:
                                self._lose_next, link.lose_reply = False, True
                        link.last = "client"
                else:
                    cut = link.lose_reply
                    link.last = "server"
            if cut:
                link.close()
                return
            try:
                sink.sendall(data)
            except OSError:
                link.close()
                return
