"""Walking decoded JSON (dicts and lists) without recursion, for the limits on what we accept.

A message or event nested thousands of levels deep must cost no more than the limit that
refuses it, and must never reach Python's recursion limit: :func:`containers` walks with an
explicit stack, lazily, so a caller stops at the first node over its limit.
"""

from __future__ import annotations

from collections.abc import Iterator


def containers(value: object) -> Iterator[tuple[int, list[object]]]:
    """Every dict and list (or tuple) in ``value``: its depth (``value`` itself is 0) and its
    children (a dict's values)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list | tuple):
            children = list(item)
        else:
            continue
        yield depth, children
        stack.extend((child, depth + 1) for child in children)
