"""The workers' consumer refuses a message whose headers nest too deeply (workers.consumer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from celery.worker.consumer import Consumer

from shared.broker import MAX_MESSAGE_DEPTH
from shared.settings import Settings
from workers.config import celery_config
from workers.consumer import GuardedConsumer


@dataclass
class FakeMessage:
    headers: Any
    acked: bool = False
    handled: list[str] = field(default_factory=list)

    def ack(self) -> None:
        self.acked = True


def nested(levels: int) -> dict[str, Any]:
    top: dict[str, Any] = {}
    inner = top
    for _ in range(levels - 1):
        inner["a"] = {}
        inner = inner["a"]
    return top


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> Any:
    def celerys(self: Consumer, *args: Any, **kwargs: Any) -> Any:
        return lambda message: message.handled.append("celery")

    monkeypatch.setattr(Consumer, "create_task_handler", celerys)
    consumer = object.__new__(GuardedConsumer)  # no worker needed for the handler
    return consumer.create_task_handler()


def test_deep_headers_are_refused_logged_and_acknowledged(
    handler: Any, caplog: pytest.LogCaptureFixture
) -> None:
    message = FakeMessage({"id": "abc", "task": "sessionpipe.ingest_event", "x": nested(500)})
    assert handler(message) is None
    assert message.acked and message.handled == []
    assert "refused message 'abc' of task 'sessionpipe.ingest_event'" in caplog.text
    assert f"nested deeper than {MAX_MESSAGE_DEPTH}" in caplog.text


def test_ordinary_messages_go_to_celery(handler: Any) -> None:
    for headers in ({"id": "abc", "task": "t", "argsrepr": "[]"}, None, "junk"):
        message = FakeMessage(headers)
        handler(message)
        assert message.handled == ["celery"] and not message.acked


def test_the_workers_use_it(tmp_path: Any) -> None:
    config = celery_config(Settings(home=tmp_path))
    assert config["worker_consumer"] == "workers.consumer:GuardedConsumer"
