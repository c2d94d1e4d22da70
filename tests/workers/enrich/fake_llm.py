"""A fake LLM provider on 127.0.0.1: Anthropic's ``POST /v1/messages`` and OpenAI's
``POST /v1/chat/completions``, close enough for the official SDKs.

Each request is recorded (monotonic arrival time, path, headers, JSON body) and answered by
the test's ``respond(index, request)``, which returns a :class:`Reply`: a status, a JSON
body (or raw text), headers, and a delay before answering (to outlast a client's timeout).
``text_reply`` wraps a model's text in the provider's success shape, ``error_reply`` gives
the provider's error shape. Delays end early when the server stops, so a test never waits
for a sleeping handler.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANTHROPIC_PATH = "/v1/messages"
OPENAI_PATH = "/v1/chat/completions"
#: How often the server checks whether to stop, seconds (http.server's 0.5 s would make
#: every test wait that long to tear down).
POLL_S = 0.01


@dataclass(frozen=True)
class Recorded:
    at: float  # time.monotonic() when the request arrived
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # the JSON the client sent

    @property
    def text(self) -> str:
        """Every message's text in the request, system prompt included."""
        return json.dumps(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None  # JSON-able, or str for a raw body
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


Respond = Callable[[int, Recorded], Reply]


def text_reply(provider: str, text: str, *, truncated: bool = False) -> Reply:
    """The provider's answer carrying the model's ``text``."""
    if provider == "anthropic":
        return Reply(
            body={
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": "claude-fake",
                "content": [{"type": "text", "text": text}],
                "stop_reason": "max_tokens" if truncated else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 10, "output_tokens": 10},
            }
        )
    return Reply(
        body={
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "gpt-fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": "length" if truncated else "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }
    )


def error_reply(
    provider: str, status: int, *, headers: dict[str, str] | None = None, delay_s: float = 0.0
) -> Reply:
    """The provider's error body for ``status``."""
    kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}
    name = kind.get(status, "api_error")
    if provider == "anthropic":
        body: Any = {"type": "error", "error": {"type": name, "message": f"fake {status}"}}
    else:
        body = {"error": {"message": f"fake {status}", "type": name, "code": None}}
    return Reply(status=status, body=body, headers=headers or {}, delay_s=delay_s)


class FakeLlm:
    """The server; ``base_url(provider)`` is what the SDK's ``base_url`` takes."""

    def __init__(self, respond: Respond | None = None) -> None:
        self.respond: Respond = respond or (lambda i, r: Reply(status=500))
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (the http.server API)
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                recorded = Recorded(
                    at=time.monotonic(),
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=json.loads(raw) if raw else None,
                )
                with fake._lock:
                    index = len(fake.requests)
                    fake.requests.append(recorded)
                reply = fake.respond(index, recorded)
                if reply.delay_s and fake._stopping.wait(reply.delay_s):
                    return
                payload = (
                    reply.body.encode()
                    if isinstance(reply.body, str)
                    else json.dumps(reply.body if reply.body is not None else {}).encode()
                )
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (its timeout)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": POLL_S}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def base_url(self, provider: str) -> str:
        root = f"http://127.0.0.1:{self.port}"
        return root if provider == "anthropic" else root + "/v1"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def fake_llm(respond: Respond | None = None) -> Iterator[FakeLlm]:
    server = FakeLlm(respond)
    server.start()
    try:
        yield server
    finally:
        server.stop()
