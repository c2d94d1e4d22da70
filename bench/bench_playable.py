"""The playable MP4 of a long session: assembled while recording (fragmented, index first by
construction) against muxed in one run after the end (``+faststart``), in the same run.

For a session of ``--minutes`` (1080p30 H.264 at 8 Mbit/s with AAC, as ``bench_live`` builds
it from one generated minute), the same timeline and the same finished audio track:

- **ready after the end**: the one-run merge (``mux_copied``: every packet, then the
  ``+faststart`` rewrite) and the plain ffmpeg command doing the same join, against what
  the assembly leaves for the end (its last
  ``--tail-pieces`` pieces: the last video segment and the audio that had not settled,
  ``workers.assembly``), plus the assembly's total work spread over the recording;
- **how it plays**: opening and seeking with ffmpeg (PyAV: open, seek to 25/50/90 %,
  decode the first frame after the seek) and in Chromium (the file served with HTTP Range
  by Starlette, as the status API serves it: time to ``loadedmetadata``, then to
  ``seeked`` at 90 %, and the time the player shows), each the median of ``--repeat``.

    .venv/bin/python bench/bench_playable.py --minutes 30
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import av  # noqa: E402

from bench.bench_live import DEFAULT_CACHE, live_session  # noqa: E402
from shared.segments import SegmentKind  # noqa: E402
from shared.sessiondir import load_manifest, segment_file  # noqa: E402
from synthetic.ffmpeg_session import ffmpeg_exe  # noqa: E402
from workers.assembly import plan_pieces  # noqa: E402
from workers.media.aacchunk import ChunkStore, concat_audio_chunked  # noqa: E402
from workers.media.assemble import (  # noqa: E402
    AacConfig,
    appended,
    index_reservation,
    mux_piece,
    write_index,
)
from workers.media.fragment import timescales  # noqa: E402
from workers.media.merge import mux_copied  # noqa: E402
from workers.media.timeline import SegmentInput, Timeline, plan_timeline  # noqa: E402

RATE = 48_000
BITRATE = 128_000
SEEK_POINTS = (0.25, 0.5, 0.9)
BROWSER_SEEK = 0.9
BROWSER_TIMEOUT_S = 60.0


def timeline_of(folder: Path) -> Timeline:
    manifest = load_manifest(folder)
    start = manifest.started_at
    inputs = [
        SegmentInput(
            SegmentKind(s.kind),
            str(segment_file(folder, s)),
            (s.started_at - start).total_seconds() if s.started_at else None,
            float(s.duration or 0.0),
        )
        for s in manifest.segments
    ]
    return plan_timeline(inputs)


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    value = action()
    return time.perf_counter() - began, value


def assemble(
    timeline: Timeline, audio: Path, output: Path, tail: int
) -> tuple[float, float, int]:
    """Assemble the file piece by piece: (seconds for all pieces, seconds for the last
    ``tail`` pieces, pieces)."""
    with av.open(str(audio)) as container:
        stream = container.streams.audio[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        assert stream.time_base is not None
        scale = stream.time_base * RATE
        packets = [
            (int(p.pts * scale), int((p.duration or 0) * scale), bytes(p))
            for p in container.demux(stream)
            if p.pts is not None and p.size
        ]
    config = AacConfig(RATE, "stereo", BITRATE, extradata)
    planned = plan_pieces(timeline, {}, RATE, final=True)
    first: dict[int, int] = {}
    sequence = 1
    times: list[float] = []
    at = 0
    with output.open("wb") as handle:
        for index, piece in enumerate(planned):
            began = time.perf_counter()
            low = -10**12 if piece.audio_from is None else piece.audio_from
            high = 10**15 if piece.audio_until is None else piece.audio_until
            mine = []
            while at < len(packets) and packets[at][0] < high:
                if packets[at][0] >= low:
                    mine.append(packets[at])
                at += 1
            muxed = mux_piece(timeline, piece.segment, until=piece.until, audio=config,
                              packets=mine, work=output.parent / "piece.mp4")  # fmt: skip
            if index == 0:
                first, fragments = muxed.starts, muxed.media.count(b"moof")
                reserved = index_reservation(fragments / (piece.until - piece.segment.out_start),
                                             len(first))  # fmt: skip
                index_at, data = len(muxed.init), muxed.init + reserved + muxed.media
                sequence = 1 + fragments
            else:
                data, count = appended(muxed, first, sequence)
                sequence += count
            handle.write(data)
            times.append(time.perf_counter() - began)
    began = time.perf_counter()
    with output.open("rb") as handle:
        scales = timescales(handle.read(index_at))
    assert write_index(output, index_at, len(reserved), scales), "the index did not fit"
    index_s = time.perf_counter() - began
    return sum(times) + index_s, sum(times[-tail:]) + index_s, len(planned)


def plain_ffmpeg(timeline: Timeline, audio: Path, output: Path) -> float:
    """Seconds the ffmpeg command line takes for the same work (the session's video
    segments joined by the concat demuxer and the audio track, stream copy, ``+faststart``);
    the bench sessions have no pause or overlap, so the join is the timeline's."""
    listing = output.with_suffix(".txt")
    listing.write_text("".join(f"file '{s.path}'\n" for s in timeline.of_kind(SegmentKind.VIDEO)))
    command = [ffmpeg_exe(), "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i",
               str(listing), "-i", str(audio), "-map", "0:v", "-map", "1:a", "-c", "copy",
               "-movflags", "+faststart", str(output)]  # fmt: skip
    seconds, _ = timed(lambda: subprocess.run(command, check=True))
    return seconds


def ffmpeg_seeks(path: Path) -> dict[str, float]:
    """Median seconds to open, and to open + seek + decode a frame at each point."""
    opens: list[float] = []
    seeks: dict[float, list[float]] = {p: [] for p in SEEK_POINTS}
    for _ in range(3):
        seconds, _ = timed(lambda: av.open(str(path)).close())
        opens.append(seconds)
        for point in SEEK_POINTS:
            def seek(point: float = point) -> float:
                with av.open(str(path)) as container:
                    stream = container.streams.video[0]
                    duration = float(container.duration or 0) / av.time_base
                    assert stream.time_base is not None
                    container.seek(int(duration * point / stream.time_base), stream=stream)
                    frame = next(container.decode(stream))
                    return float(frame.time or 0.0)
            seconds, _ = timed(seek)
            seeks[point].append(seconds)
    out = {"open": statistics.median(opens)}
    out.update({f"seek {int(p * 100)}%": statistics.median(v) for p, v in seeks.items()})
    return out


@contextmanager
def serving(files: dict[str, Path]) -> Iterator[str]:
    """The files over HTTP with Range (Starlette's FileResponse, as the status API)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, Response
    from starlette.routing import Route

    from tests.support.servers import free_port

    def page(_: Request) -> Response:
        return HTMLResponse("<!doctype html><video id=v muted preload=metadata></video>")

    def media(request: Request) -> Response:
        return FileResponse(files[request.path_params["name"]], media_type="video/mp4")

    app = Starlette(routes=[Route("/", page), Route("/m/{name}", media)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


BROWSER_PLAY = """
const [url, point, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const v = document.getElementById('v');
const t0 = performance.now();
let meta = null;
v.addEventListener('loadedmetadata', () => {
  meta = performance.now() - t0;
  const t1 = performance.now();
  v.addEventListener('seeked', () => {
    done({meta: meta / 1000, seek: (performance.now() - t1) / 1000,
          at: v.currentTime, duration: v.duration});
  }, {once: true});
  v.currentTime = v.duration * point;
}, {once: true});
v.addEventListener('error', () => done({error: String(v.error && v.error.message)}), {once: true});
v.src = url;
"""


def browser_seeks(files: dict[str, Path], repeat: int) -> dict[str, dict[str, float]]:
    from tests.support.browser import chromium

    results: dict[str, dict[str, list[float]]] = {name: {} for name in files}
    with serving(files) as base, chromium() as driver:
        driver.set_script_timeout(BROWSER_TIMEOUT_S)
        for round_ in range(repeat):
            for name in (list(files) if round_ % 2 == 0 else list(reversed(files))):
                driver.get(f"{base}/")
                got = driver.execute_async_script(
                    BROWSER_PLAY, f"{base}/m/{name}?r={round_}", BROWSER_SEEK
                )
                if "error" in got:
                    raise RuntimeError(f"{name}: the browser could not play it: {got['error']}")
                for key in ("meta", "seek", "at", "duration"):
                    results[name].setdefault(key, []).append(float(got[key]))
    return {
        name: {key: statistics.median(values) for key, values in by.items()}
        for name, by in results.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--tail-pieces", type=int, default=3,
                        help="pieces left for the end (the last segment and unsettled audio)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--keep", type=Path, help="keep the files made in this folder")
    args = parser.parse_args(argv)
    folder = live_session(args.minutes, args.cache)
    timeline = timeline_of(folder)
    with tempfile.TemporaryDirectory(prefix="sessionpipe-playable-") as tmp:
        work = Path(tmp)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            work = args.keep
        audio_s, audio = timed(lambda: concat_audio_chunked(
            timeline, work / "audio.m4a", sample_rate=RATE, bitrate=BITRATE, workers=2,
            store=ChunkStore(work / "chunks"),
        ).path)  # fmt: skip
        print(f"{args.minutes} min session, {timeline.duration:.0f} s; "
              f"audio track in {audio_s:.1f} s", flush=True)  # fmt: skip
        for segment in timeline.segments:  # every contender reads them from the page cache
            Path(segment.path).read_bytes()
        plain_s = plain_ffmpeg(timeline, audio, work / "ffmpeg.mp4")
        one_s, _ = timed(lambda: mux_copied(timeline, audio, work / "one-run.mp4", None))
        total_s, tail_s, pieces = assemble(timeline, audio, work / "assembled.mp4",
                                           args.tail_pieces)  # fmt: skip
        sizes = {n: (work / n).stat().st_size for n in ("one-run.mp4", "assembled.mp4")}
        print("| playable MP4 | after the end, s | all its work, s | size, MB |")
        print("|---|---|---|---|")
        print(f"| one run (+faststart) | {one_s:.2f} | {one_s:.2f} "
              f"| {sizes['one-run.mp4'] / 1e6:.0f} |")  # fmt: skip
        print(f"| assembled ({pieces} pieces; last {args.tail_pieces} after the end) "
              f"| {tail_s:.2f} | {total_s:.2f} | {sizes['assembled.mp4'] / 1e6:.0f} |")  # fmt: skip
        print(f"| plain ffmpeg (concat demuxer, -c copy, +faststart) | {plain_s:.2f} "
              f"| {plain_s:.2f} | {(work / 'ffmpeg.mp4').stat().st_size / 1e6:.0f} |")  # fmt: skip
        print(f"after the end: assembled / one run = {tail_s / one_s:.3f}; one run / plain "
              f"ffmpeg = {one_s / plain_s:.2f}; assembled / plain ffmpeg = "
              f"{tail_s / plain_s:.3f}", flush=True)  # fmt: skip
        files = {"one-run": work / "one-run.mp4", "assembled": work / "assembled.mp4"}
        print("\n| file | ffmpeg open s | " + " | ".join(f"seek {int(p * 100)}% s" for p in
                                                         SEEK_POINTS) + " |")  # fmt: skip
        print("|---|---|" + "---|" * len(SEEK_POINTS))
        for name, path in files.items():
            seeks = ffmpeg_seeks(path)
            print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in seeks.values()) + " |")
        browser = browser_seeks(files, args.repeat)
        print("\n| file | Chromium: to metadata s | seek to 90% s | shown at s (of) |")
        print("|---|---|---|---|")
        for name, figures in browser.items():
            print(f"| {name} | {figures['meta']:.3f} | {figures['seek']:.3f} "
                  f"| {figures['at']:.2f} ({figures['duration']:.2f}) |")  # fmt: skip
    print(f"run at {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
