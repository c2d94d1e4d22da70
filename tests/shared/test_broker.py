"""The workers' message decoder: a body nested too deeply is a decode error, not a crash."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from kombu.exceptions import DecodeError
from kombu.serialization import dumps, loads

from shared.broker import (
    JSON_CONTENT_TYPE,
    MAX_MESSAGE_DEPTH,
    bounded_json_loads,
    nested_deeper_than,
    use_bounded_json,
)
from shared.events import MAX_EVENT_DEPTH


def nested(levels: int) -> list[Any]:
    """Lists in lists, ``levels`` of them."""
    top: list[Any] = []
    inner = top
    for _ in range(levels - 1):
        inner.append([])
        inner = inner[0]
    return top


def test_a_body_nested_as_deep_as_pickle_cannot_take_is_what_is_refused() -> None:
    """Why the limit exists: the worker pickles arguments for its pool processes."""
    body = nested(500)
    with pytest.raises(RecursionError):
        pickle.dumps(body)
    with pytest.raises(ValueError, match=f"nested deeper than {MAX_MESSAGE_DEPTH} levels"):
        bounded_json_loads(json.dumps(body))


def test_registered_it_turns_a_deep_message_into_a_decode_error() -> None:
    use_bounded_json()
    _, _, data = dumps([[nested(MAX_MESSAGE_DEPTH)], {}, {}], serializer="json")
    with pytest.raises(DecodeError, match="nested deeper"):
        loads(data, JSON_CONTENT_TYPE, "utf-8")
    deeper_than_json_can = "[" * 100_000 + "]" * 100_000
    with pytest.raises(DecodeError, match="nested too deeply"):
        loads(deeper_than_json_can, JSON_CONTENT_TYPE, "utf-8")


def test_the_deepest_event_still_decodes() -> None:
    """A task body is [args, kwargs, embed]; an event inside it nests MAX_EVENT_DEPTH."""
    event: dict[str, Any] = {"payload": {}}
    inner = event["payload"]
    for _ in range(MAX_EVENT_DEPTH - 1):
        inner["a"] = {}
        inner = inner["a"]
    body = [[event], {}, {"callbacks": None}]
    assert bounded_json_loads(json.dumps(body)) == body


def test_depth_is_measured_without_recursion() -> None:
    assert nested_deeper_than(nested(200_000), 10)
    assert nested_deeper_than(nested(11), 10)
    assert not nested_deeper_than(nested(10), 10)
    assert not nested_deeper_than({"a": [1, 2, {"b": "c"}]}, 3)
