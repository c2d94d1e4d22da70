"""What is made while recording, through a real Celery worker on Redis and PostgreSQL: the
live view (read over the API) and the playable MP4's assembly.

While a session records, every stored video segment gets its fragment, and the API's HLS
playlists list them in order (not ended while recording). The live stream (the init
segment followed by the media segments, as a player appends them) holds exactly the video
packets of the finished MP4 at the same relative times, and the recorder's own AAC packets
where the finished timeline puts them, gapless, silence where the microphone recorded
nothing; the stream ends with the session and its files go once the MP4 exists. The
playable MP4 was assembled while recording but for its last pieces, and demuxes to the
very packets, with the very timestamps, of the one-run merge of the same session.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
from starlette.testclient import TestClient

from capture_agent.emit import EventEmitter
from shared import models
from shared.db import session_scope
from shared.segments import SegmentKind
from shared.sessiondir import load_manifest, segment_file
from shared.settings import Settings
from shared.storage import Storage
from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from tests.support.services import WorkerProcess, wait_for_session
from tests.support.shipping import SessionShipper
from tests.support.waiting import wait_for
from workers import live
from workers.api.app import create_app
from workers.assembly import ASSEMBLY_DIR, DESCRIPTION_NAME, folder
from workers.media.liveaudio import AAC_FRAME_SAMPLES as AAC_FRAME
from workers.media.liveaudio import silent_frame
from workers.media.merge import mux_copied
from workers.media.timeline import Timeline
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
def system(worker_system: tuple[Settings, WorkerProcess]) -> System:
    """conftest's worker_system, with the storage the test reads."""
    settings, worker = worker_system
    return System(settings, Storage(settings.storage), worker)


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

    # Audio: the recorder's own AAC packets, copied to where the finished timeline puts
    # them, one gapless run, silence where the microphone recorded nothing (9-13 s).
    live_audio, rate = _audio_run(live_file)
    assert live_audio[0][0] == 0
    for (pts, duration, _), (following, _, _) in zip(live_audio, live_audio[1:], strict=False):
        assert 0 <= following - (pts + duration) < AAC_FRAME, (pts, duration, following)
    assert live_audio[-1][0] + live_audio[-1][1] >= got[-1][0] * rate - AAC_FRAME
    silence = silent_frame(rate, "mono", settings.audio_bitrate).frame
    copied = [(pts, payload) for pts, _, payload in live_audio if payload != silence]
    recorded = [(pts, payload) for pts, payload in _recorded_audio(timeline, rate)
                if pts < live_audio[-1][0] + AAC_FRAME]  # fmt: skip
    assert [p for _, p in copied] == [p for _, p in recorded]
    assert all(
        abs(a - b) <= AAC_FRAME // 2 for (a, _), (b, _) in zip(copied, recorded, strict=True)
    )
    hole = [pts for pts, _, payload in live_audio if payload == silence]
    assert len(hole) >= (13.0 - 9.0) * rate / AAC_FRAME - 2  # the whole hole
    assert all(8.5 * rate <= pts < 13.5 * rate for pts in hole)


def _audio_run(path: Path) -> tuple[list[tuple[int, int, bytes]], int]:
    """(pts, duration, payload) of the file's audio packets in samples, and the rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.time_base == Fraction(1, stream.rate)
        packets = [(p.pts, p.duration, bytes(p)) for p in container.demux(stream)
                   if p.pts is not None and p.duration and p.size]  # fmt: skip
        return packets, stream.rate


def _recorded_audio(timeline: Timeline, rate: int) -> list[tuple[int, bytes]]:
    """The microphone segments' packets (priming packets aside) at the output sample where
    the timeline puts their first sample (recorded time = the kept part's start less the
    trim, plus the packet's time in its file)."""
    placed: list[tuple[int, bytes]] = []
    for segment in timeline.of_kind(SegmentKind.AUDIO):
        with av.open(segment.path) as container:
            stream = container.streams.audio[0]
            assert stream.time_base is not None and stream.rate == rate
            for packet in container.demux(stream):
                if packet.pts is None or packet.pts < 0 or not packet.size:
                    continue
                within = float(packet.pts * stream.time_base)
                if within < segment.trim_start or within >= segment.trim_start + segment.duration:
                    continue
                recorded_at = segment.start - segment.trim_start + within
                placed.append((round(timeline.to_output(recorded_at) * rate), bytes(packet)))
    return sorted(placed, key=lambda item: item[0])


def test_a_fragment_waits_for_its_audio_then_for_two_later_segments_at_most(
    system: System, tmp_path: Path
) -> None:
    """A video segment stored before the microphone audio of its stretch gets no fragment
    yet; its audio arriving makes it, with the recorder's packets. One whose audio never
    comes is made with silence once two later video segments are stored (the view trails
    by two segments at most), and the end of the recording makes whatever waits."""
    settings, storage = system.settings, system.storage
    session_id = "live-waits"
    folder = record_synthetic_session(tmp_path / session_id, session_id=session_id,
                                      name=session_id, spec=SPEC, started_at=STARTED)  # fmt: skip
    manifest = load_manifest(folder)
    video = [s for s in manifest.segments if s.kind == "video"]
    mic = [s for s in manifest.segments if s.kind == "audio"]
    assert mic[0].started_at == video[0].started_at
    shipper = SessionShipper(storage, EventEmitter(settings), session_id)
    shipper.start(name=session_id, started_at=manifest.started_at)

    def ship(segment: Any) -> None:
        shipper.ship_segment(segment_file(folder, segment), kind=segment.kind, file=segment.file,
                             started_at=segment.started_at, duration=segment.duration)  # fmt: skip

    def made() -> dict[str, live.FragmentInfo]:
        return {f.segment: f for f in live.fragments(storage, session_id)}

    def passes_run(count: int) -> None:  # one live pass per stored segment, each logged
        def done() -> bool:
            log = system.worker.log_path.read_text(errors="replace")
            return len(re.findall(r"sessionpipe\.live_fragment\[[^]]*\] succeeded", log)) >= count

        wait_for(done, LIVE_TIMEOUT_S, f"{count} live passes")

    ship(video[0])
    ship(video[1])
    passes_run(2)
    assert made() == {}  # waiting for the microphone's first segment
    ship(mic[0])
    passes_run(3)
    assert video[0].file in made()
    assert video[1].file not in made()  # its audio (4-8 s) is not stored yet
    ship(video[2])
    ship(video[3])  # two later segments: the second fragment is made without its audio
    wait_for(lambda: video[1].file in made(), LIVE_TIMEOUT_S, "the second fragment")
    silence = silent_frame(48_000, "mono", settings.audio_bitrate).frame
    stream = tmp_path / "first.mp4"
    fragments = made()
    folder_path = storage.path(live.live_key(storage, session_id))
    for name, target in ((video[0].file, stream), (video[1].file, tmp_path / "second.mp4")):
        info = fragments[name]
        target.write_bytes((folder_path / info.init).read_bytes()
                           + (folder_path / info.media).read_bytes())  # fmt: skip
    first, _ = _audio_run(stream)
    second, _ = _audio_run(tmp_path / "second.mp4")
    assert first and not any(p == silence for _, _, p in first)  # the recorder's audio
    assert second and all(p == silence for _, _, p in second)  # none stored for it
    # The recorder says it ended (announcing segments not stored yet, so the session is not
    # processed and its view stays): what waited is made, with what audio there is.
    shipper.end(segment_count=len(manifest.segments))
    wait_for(lambda: len(made()) == 4, LIVE_TIMEOUT_S, "the end to make what waited")
