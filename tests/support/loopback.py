"""The threaded loopback HTTP server every test double (proxies, identity endpoint) is built on."""

from __future__ import annotations

import http.server


def quiet_server(handler: type[http.server.BaseHTTPRequestHandler]) -> http.server.ThreadingHTTPServer:
    """A threaded server on ``127.0.0.1`` (a free port), not yet serving, whose failed replies are silent.

    A client that went away (a CLI run that ended, a killed process) makes a reply fail: expected, and
    the traceback the base class prints from the handler's thread would land in whatever test happens to
    capture stderr at that moment (an in-process CLI run asserting a one-line error).
    """
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    return server
