"""Receipts: the workers' confirmation that a segment reached the pipeline.

The capture agent may delete a local segment only once the workers have recorded it; the
workers say so by writing a small JSON receipt next to the session's segments in shared
storage (``sessions/<id>/receipts/segment-<index>.json``). The agent reads it back and deletes
its copy only when the receipt names the same sha256 it shipped.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.clock import utcnow
from shared.ids import validate_session_id
from shared.storage import SESSIONS_DIR, Storage

RECEIPTS_DIR = "receipts"
MAX_RECEIPT_BYTES = 64 * 1024


class Receipt(BaseModel):
    model_config = ConfigDict(extra="ignore")

    session_id: str
    index: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    confirmed_at: datetime | None = None


def receipt_key(session_id: str, index: int) -> str:
    """Storage key of the receipt for segment ``index`` of ``session_id``."""
    validate_session_id(session_id)
    if not isinstance(index, int) or index < 0:
        raise ValueError(f"invalid segment index {index!r}")
    return f"{SESSIONS_DIR}/{session_id}/{RECEIPTS_DIR}/segment-{index}.json"


def receipt_bytes(session_id: str, index: int, sha256: str) -> bytes:
    receipt = Receipt(
        session_id=session_id, index=index, sha256=sha256, confirmed_at=utcnow()
    )
    return receipt.model_dump_json().encode("utf-8")


def parse_receipt(raw: bytes) -> Receipt | None:
    """The receipt in ``raw``, or None when it is not a valid receipt (never trusted blindly)."""
    if len(raw) > MAX_RECEIPT_BYTES:
        return None
    try:
        return Receipt.model_validate(json.loads(raw))
    except (ValueError, ValidationError):
        return None


def write_receipt(storage: Storage, session_id: str, index: int, sha256: str) -> str:
    """Write (atomically, temp name + rename) the receipt for one segment; returns its key.

    Idempotent: writing the same receipt again only refreshes ``confirmed_at``.
    """
    key = receipt_key(session_id, index)
    data = receipt_bytes(session_id, index, sha256)
    with storage.atomic_path(key) as tmp:
        tmp.write_bytes(data)
    return key


def read_receipt(storage: Storage, session_id: str, index: int) -> Receipt | None:
    path = storage.path(receipt_key(session_id, index))
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    receipt = parse_receipt(raw)
    if receipt is None or receipt.session_id != session_id or receipt.index != index:
        return None
    return receipt
