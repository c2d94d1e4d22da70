"""The ``finalize`` stage: check the outputs really play, write ``derived/outputs.json``,
delete the scratch files of the stages before it (the compressed copy's parts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.clock import utcnow
from shared.storage import Storage, sha256_file
from workers import live, parts
from workers.media import probe
from workers.stages.context import StageContext, StageOutput

MANIFEST_OUTPUT = "outputs.json"


def describe_output(storage: Storage, key: str) -> dict[str, Any]:
    path = storage.path(key)
    info = probe(path)
    return {
        "key": key,
        "path": str(path),
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
        "duration": info.duration,
        "video_codec": info.video_codec,
        "audio_codec": info.audio_codec,
    }


def write_manifest(ctx: StageContext) -> StageOutput:
    storage = ctx.storage
    merged_key = ctx.output_of("merge", needed_by="finalize")
    outputs = {"mp4": describe_output(storage, merged_key)}
    compressed_key = ctx.outputs.get("compress")
    if compressed_key is not None:
        outputs["compressed"] = describe_output(storage, compressed_key)
    manifest = {
        "session_id": ctx.snapshot.id,
        "outputs": outputs,
        "finalized_at": utcnow().isoformat(),
    }
    key = storage.derived_key(ctx.snapshot.id, MANIFEST_OUTPUT)
    with storage.atomic_path(key) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    # The compressed copy's parts (workers.parts) are scratch once the copy is recorded.
    parts.discard(storage, ctx.snapshot.id)
    live.discard(storage, ctx.snapshot.id)
    return StageOutput(
        output_key=merged_key, result={"manifest": key, "duration": outputs["mp4"]["duration"]}
    )
