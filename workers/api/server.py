"""Serving the API with uvicorn: the one place ``sessionpipe api`` and ``demo --serve`` run it.

Uvicorn's access log prints every request's path with its query, and the web page's login
is a ``?token=`` query: :class:`RedactToken` removes the value before a line is written,
so the token never reaches a log.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable
from types import FrameType
from typing import Final

from starlette.applications import Starlette

from workers.api.auth import TOKEN_PARAM

log = logging.getLogger(__name__)

ACCESS_LOGGER: Final = "uvicorn.access"
LISTEN_BACKLOG: Final = 2048  # uvicorn's own default
#: On Ctrl-C or SIGTERM, seconds to let requests finish before closing what is still open:
#: an open page's event stream never finishes by itself, and would hold the stop forever.
GRACEFUL_SHUTDOWN_S: Final = 3
REDACTED: Final = "[redacted]"
_TOKEN_IN_QUERY: Final = re.compile(rf"([?&]{TOKEN_PARAM}=)[^&\s\"]*")


def redact(text: str) -> str:
    return _TOKEN_IN_QUERY.sub(rf"\g<1>{REDACTED}", text)


class RedactToken(logging.Filter):
    """Replaces the value of a ``token`` query parameter in a log record's arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        record.msg = redact(record.msg) if isinstance(record.msg, str) else record.msg
        return True


class PortUnavailableError(OSError):
    """The address cannot be listened on (in use, or not this machine's)."""


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening (PortUnavailableError if it cannot).

    Made with IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on connections
    of a socket that says it is TCP; with Nagle on, every response waited ~40 ms for the
    client's delayed ACK between its headers and its body (bench_api.py found it).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise PortUnavailableError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def serve(
    app: Starlette,
    host: str,
    port: int,
    *,
    log_level: str = "info",
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Run ``app`` until Ctrl-C (SIGINT or SIGTERM end it gracefully).

    The socket is bound and listening before ``on_listening`` is called (it prints the URL),
    so a browser opening that URL at once is queued, never refused.
    """
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )  # fmt: skip  (making the config sets up uvicorn's logging)
    logging.getLogger(ACCESS_LOGGER).addFilter(RedactToken())
    sock = listening_socket(host, port)
    if on_listening is not None:
        on_listening()

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            stopping = getattr(app.state, "stopping", None)
            if stopping is not None:
                stopping.set()  # the event streams end, so the graceful stop is quick
            super().handle_exit(sig, frame)

    with sock:
        try:
            Server(config).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn stops gracefully, then raises Ctrl-C again
            log.info("stopped by Ctrl-C")
