"""A forward HTTP proxy on loopback, as ``http_proxy``/``https_proxy`` name one, recording what it relayed.

Plain HTTP requests arrive in absolute form (``PUT http://host:port/path``) and are forwarded with
``http.client``; an upstream failure (a dropped or cut answer) closes the client's connection
without an answer, so a fault injected behind the proxy still reaches the client as a broken
connection. ``CONNECT host:port`` opens a tunnel (HTTPS), relayed byte for byte.
"""

from __future__ import annotations

import http.client
import http.server
import select
import socket
import threading
import urllib.parse

from support.loopback import quiet_server

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade"}


class ForwardProxy:
    """``endpoint`` is ``http://127.0.0.1:PORT``; ``relayed`` lists ``(method, target)`` in arrival order,
    ``tunnelled`` counts the bytes the clients sent through each ``CONNECT`` target."""

    def __init__(self) -> None:
        self.relayed: list[tuple[str, str]] = []
        self.tunnelled: dict[str, int] = {}
        self.proxy_authorization: list[str | None] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
                pass

            def _record(self) -> None:
                with owner._lock:
                    owner.relayed.append((self.command, self.path))
                    owner.proxy_authorization.append(self.headers.get("Proxy-Authorization"))

            def _forward(self) -> None:
                self._record()
                target = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = http.client.HTTPConnection(target.hostname or "", target.port or 80, timeout=60)
                try:
                    path = target.path + (f"?{target.query}" if target.query else "")
                    upstream.request(self.command, path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                except (OSError, http.client.HTTPException):
                    self.close_connection = True  # no answer: the client sees the connection break
                    return
                finally:
                    upstream.close()
                self.send_response(answer.status, answer.reason)
                head = self.command == "HEAD"  # no body: the upstream's Content-Length (a blob's size) stands
                for key, value in answer.getheaders():
                    if key.lower() not in HOP_BY_HOP and (head or key.lower() != "content-length"):
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    self.close_connection = True  # the client went away before the answer

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _forward

            def do_CONNECT(self) -> None:
                self._record()
                host, _, port = self.path.rpartition(":")
                try:
                    upstream = socket.create_connection((host, int(port)), timeout=60)
                except OSError:
                    self.send_error(502)
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                self.close_connection = True
                sockets = [self.connection, upstream]
                try:
                    while True:
                        ready, _, _ = select.select(sockets, [], [], 60)
                        if not ready:
                            return
                        for s in ready:
                            data = s.recv(65536)
                            if not data:
                                return
                            if s is self.connection:
                                with owner._lock:
                                    owner.tunnelled[self.path] = owner.tunnelled.get(self.path, 0) + len(data)
                            (upstream if s is self.connection else self.connection).sendall(data)
                except OSError:
                    return
                finally:
                    upstream.close()

        self._server = quiet_server(Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
