"""What is made while recording, through a real Celery worker on Redis and PostgreSQL: the
live view (read over the API) and the playable MP4's assembly.

While a session records, every stored video segment gets its fragment, and the API's HLS
playlists list them in order (not ended while recording). The live stream (the init
segment followed by the media segments, as a player appends them) holds exactly the video
packets of the finished MP4 at the same relative times, and the audio packets of the
finished audio track at the same times where the audio had settled; the stream ends with
the session and its files go once the MP4 exists. The playable MP4 was assembled while
recording but for its last pieces, and demuxes to the very packets, with the very
timestamps, of the one-run merge of the same session.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import av
import pytest
from starlette.testclient import TestClient

from capture_agent.emit import EventEmitter
from shared import models
from shared.db import session_scope
from shared.sessiondir import load_manifest, segment_file
from shared.settings import Settings
from shared.storage import Storage
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from tests.support.services import WorkerProcess, service_env, settings_for, wait_for_session
from tests.support.shipping import SessionShipper
from tests.support.waiting import wait_for
from workers import live
from workers.api.app import create_app
from workers.assembly import ASSEMBLY_DIR, DESCRIPTION_NAME, folder
from workers.media.merge import mux_copied
from workers.snapshot import load_snapshot
from workers.stages.context import build_timeline

pytestmark = pytest.mark.integration

SPEC = SyntheticSpec(duration=24.0, segment_seconds=4.0, audio_holes=((9.0, 13.0),),
                     width=640, height=360, fps=15)  # fmt: skip
STARTED = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
LIVE_TIMEOUT_S = 120.0
TICK_S = 1e-3  # timestamps agree to within a millisecond (time bases differ)


@dataclass
class System:
    settings: Settings
    storage: Storage
    worker: WorkerProcess


@pytest.fixture
def system(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[System]:
    home = tmp_path / "home"
    env = service_env(home=home, database_url=pg_url, broker_url=redis_url)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    settings = settings_for(home=home, database_url=pg_url, broker_url=redis_url)
    yield System(settings, Storage(settings.storage), worker)
    worker.discard()


def _timed(path: Path, kind: str) -> list[tuple[int | None, int | None, bytes]]:
    """(pts, dts, payload) of every packet of the file's ``kind`` stream, as ffmpeg reads."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        return [(p.pts, p.dts, bytes(p)) for p in container.demux(stream) if p.size]


def _assembled_pieces(storage: Storage, session_id: str) -> int:
    """Pieces with audio the assembly's description records (0 before it exists). Pieces
    appended before any audio segment was stored are video only; the pass that first sees
    the audio settled starts the file again, so only pieces with audio count here."""
    try:
        description = json.loads((folder(storage, session_id) / DESCRIPTION_NAME).read_text())
    except (FileNotFoundError, ValueError):
        return 0
    return len(description["pieces"]) if description["audio"] is not None else 0


def _top_level(path: Path) -> list[str]:
    """The types of the file's top-level boxes, in order."""
    kinds = []
    with path.open("rb") as handle:
        while header := handle.read(8):
            size, kind = struct.unpack(">I4s", header)
            if size == 1:
                (size,) = struct.unpack(">Q", handle.read(8))
                handle.seek(size - 16, 1)
            else:
                handle.seek(size - 8, 1)
            kinds.append(kind.decode("latin-1"))
    return kinds


def _packets(path: Path, kind: str) -> list[tuple[float, bytes]]:
    """(presentation seconds, payload) of every packet of the file's ``kind`` stream."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        assert stream.time_base is not None
        return [
            (float(p.pts * stream.time_base), bytes(p))
            for p in container.demux(stream)
            if p.pts is not None and p.size
        ]


def test_the_live_view_grows_while_recording_and_matches_the_outputs(
    system: System, tmp_path: Path
) -> None:
    settings, storage = system.settings, system.storage
    session_id = "live-view"
    folder = record_synthetic_session(tmp_path / session_id, session_id=session_id,
                                      name=session_id, spec=SPEC, started_at=STARTED)  # fmt: skip
    manifest = load_manifest(folder)
    client = TestClient(create_app(settings))
    base = f"/sessions/{session_id}"
    shipper = SessionShipper(storage, EventEmitter(settings), session_id)
    shipper.start(name=session_id, started_at=manifest.started_at)
    assert client.get(f"{base}/live.m3u8").status_code == 404  # nothing written yet
    for segment in manifest.segments:
        shipper.ship_segment(segment_file(folder, segment), kind=segment.kind, file=segment.file,
                             started_at=segment.started_at, duration=segment.duration)  # fmt: skip
    videos = sum(1 for s in manifest.segments if s.kind == "video")
    wait_for(
        lambda: len(live.contiguous(live.fragments(storage, session_id))) == videos,
        LIVE_TIMEOUT_S, "a live fragment of every video segment, without a hole",
    )  # fmt: skip

    master = client.get(f"{base}/live.m3u8")
    assert master.status_code == 200, master.text
    assert master.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    assert 'CODECS="avc1.' in master.text and "mp4a.40.2" in master.text
    assert master.text.rstrip().endswith("live/media.m3u8")
    playlist = client.get(f"{base}/live/media.m3u8").text
    assert "#EXT-X-ENDLIST" not in playlist  # still recording
    names = [line for line in playlist.splitlines() if line and not line.startswith("#")]
    (init_name,) = {line.split('"')[1] for line in playlist.splitlines() if "EXT-X-MAP" in line}
    assert len(names) == videos
    stream = client.get(f"{base}/live/{init_name}").content
    stream += b"".join(client.get(f"{base}/live/{name}").content for name in names)
    live_file = tmp_path / "live.mp4"
    live_file.write_bytes(stream)
    for hostile in ("..%2F..%2Fsession.json", "media.m3u8.json", "x.mp4"):
        assert client.get(f"{base}/live/{hostile}").status_code == 404

    wait_for(
        lambda: _assembled_pieces(storage, session_id) >= 1,
        LIVE_TIMEOUT_S, "a piece of the playable MP4 assembled while recording",
    )  # fmt: skip
    shipper.end()
    jobs = {j.stage: j for j in wait_for_session(settings.database_url, session_id, system.worker)}
    assert {j.status for j in jobs.values()} == {"succeeded"}
    assert not storage.path(live.live_key(storage, session_id)).exists()  # gone with the parts
    playable = storage.path(jobs["merge"].output_key or "")
    audio = storage.path(jobs["concat_audio"].output_key or "")

    # The playable MP4: assembled while recording, the same as the one-run merge.
    merge = jobs["merge"].result or {}
    assert merge["assembly_fallback"] is None, merge
    assert 1 <= merge["assembled"]["appended_while_recording"] < videos, merge
    assert merge["assembled"]["pieces"] == videos and merge["assembled"]["indexed"]
    with session_scope(settings.database_url) as db:
        session = db.get(models.Session, session_id)
        assert session is not None
        snapshot = load_snapshot(db, session)
    timeline = build_timeline(snapshot, storage, cut_pauses=settings.cut_pauses)
    one_run = mux_copied(timeline, audio, tmp_path / "one-run.mp4", None).path
    for kind in ("video", "audio"):
        assert _timed(playable, kind) == _timed(one_run, kind), kind
    # index first: the moov, then a sidx per track right before the first fragment
    kinds = _top_level(playable)
    first_moof = kinds.index("moof")
    assert kinds[:2] == ["ftyp", "moov"] and kinds[first_moof - 2 : first_moof] == ["sidx"] * 2
    assert not storage.path(storage.derived_key(session_id, ASSEMBLY_DIR)).exists()

    # Video: the very packets of the playable MP4, in order, at the same relative times.
    got, want = _packets(live_file, "video"), _packets(playable, "video")
    assert [p for _, p in got] == [p for _, p in want]
    shift = got[0][0] - want[0][0]
    assert abs(shift) < 0.1  # at most a frame, as players present signed composition times
    assert all(abs((g - shift) - w) < TICK_S for (g, _), (w, _) in zip(got, want, strict=True))

    # Audio: every live packet is the finished track's packet at that time where the audio
    # had settled (the last chunk was still open while recording).
    final = dict(_packets(audio, "audio"))
    live_audio = _packets(live_file, "audio")
    assert live_audio and live_audio[0][0] == pytest.approx(0.0, abs=TICK_S)
    settled_end = SPEC.duration - settings.audio_chunk_s
    settled = [(t, p) for t, p in live_audio if t < settled_end - 1.0]
    assert settled
    by_time = {round(t, 3): p for t, p in final.items()}
    assert all(by_time.get(round(t, 3)) == p for t, p in settled)
