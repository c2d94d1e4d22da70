"""Time the pipeline's media stages against the plain ffmpeg commands for the same results.

    python bench/bench_pipeline.py --minutes 2 [--json out.json] [--markdown [out.md]]

One process: synthesise (or reuse) a session under ``bench/out/sessions``, run the plain ffmpeg
commands (``bench/baselines.py``), then the pipeline's engine functions directly (no Celery, no
database), then measure the outputs (audio marker drift, SSIM/PSNR of the compressed copies)
and print one table with the issue's targets next to the figures.

Each pipeline stage is one small adapter function below (``adapt_*``). To benchmark a new entry
point, change the adapter, or swap the callable it uses without editing anything:
``--call audio=workers.media.audio:concat_audio_incremental`` (same arguments as the default).
Every row records what it called.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import imageio_ffmpeg  # noqa: E402

from bench import baselines  # noqa: E402
from bench.measure import (  # noqa: E402
    Drift,
    Quality,
    find_markers,
    marker_drift,
    video_quality,
)
from shared.settings import Settings  # noqa: E402
from synthetic.ffmpeg_session import (  # noqa: E402
    AUDIO_RATE_HZ,
    SessionSpec,
    SynthSession,
    ensure_session,
)

if TYPE_CHECKING:  # the engine is imported lazily by the adapters, so a broken one is one row
    from workers.media.timeline import SegmentInput, Timeline

OUT_DIR = ROOT / "bench" / "out"
SESSIONS_DIR = OUT_DIR / "sessions"
RUNS_DIR = OUT_DIR / "runs"

# Targets from the issue.
AUDIO_AFTER_END_MAX_S = 5.0  # audio ready this long after the session ends
AUDIO_MIN_REALTIME_X = 100.0  # whole-session audio re-encode speed
PLAYABLE_MAX_VS_COPY_MUX = 1.5  # playable MP4 vs plain stream-copy mux
COMPRESS_MAX_VS_DECODE = 2.0  # compressed copy vs decode-only time
MAX_VS_PLAIN = 1.1  # pipeline vs the correct plain command
COMPRESSED_MAX_PCT = 40.0  # compressed size, % of the original
COMPRESS_LEVEL = "medium"  # the level the size target applies to
COMPRESS_LEVEL_PARAMS = ("preset", "level", "quality")  # what compress_video() may call it

DEFAULT_QUALITY_STRIDE_FRAMES = 30  # compare one frame per second at 30 fps
BYTES_PER_MB = 1_000_000

T = TypeVar("T")


# ----------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    wall_s: float
    cpu_s: float  # this process (all threads) plus reaped child processes


def _cpu_now() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], T], repeat: int = 1) -> tuple[T, Timing]:
    """Run ``fn`` ``repeat`` times; keep the fastest wall time (and its CPU time)."""
    best: tuple[T, Timing] | None = None
    for _ in range(max(1, repeat)):
        wall0, cpu0 = time.perf_counter(), _cpu_now()
        value = fn()
        timing = Timing(time.perf_counter() - wall0, _cpu_now() - cpu0)
        if best is None or timing.wall_s < best[1].wall_s:
            best = (value, timing)
    assert best is not None
    return best


def run_command(cmd: baselines.PlainCommand) -> None:
    """Run one plain ffmpeg command; a failure raises with ffmpeg's last words."""
    proc = subprocess.run(cmd.argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg exited {proc.returncode}: {proc.stderr.strip()[-800:]}")


# ----------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One line of the result table."""

    group: str  # "plain" | "pipeline"
    stage: str
    called: list[str]  # engine functions, or the ffmpeg command summary
    command: str | None = None  # full command line for plain rows
    wall_s: float | None = None
    cpu_s: float | None = None
    realtime_x: float | None = None
    size_bytes: int | None = None
    output: str | None = None  # the file this row produced
    vs_plain: float | None = None  # wall time ratio pipeline / plain reference
    vs_plain_cpu: float | None = None  # same for CPU time (less sensitive to a busy machine)
    vs_plain_ref: str | None = None
    drift_last_ms: float | None = None
    drift_max_ms: float | None = None
    markers: str | None = None
    size_pct: float | None = None  # of the original recording
    ssim: float | None = None
    psnr_db: float | None = None
    frames_compared: int | None = None
    targets: list[str] = field(default_factory=list)  # "label: measured ok|MISS"
    note: str | None = None  # n/a reason or error

    def put_drift(self, drift: Drift) -> None:
        self.drift_last_ms, self.drift_max_ms = drift.last_join_ms, drift.max_abs_ms
        self.markers = drift.markers

    def put_quality(self, quality: Quality) -> None:
        self.ssim, self.psnr_db = quality.ssim, quality.psnr_db
        self.frames_compared = quality.frames_compared


def _check(
    row: Row,
    label: str,
    value: float | None,
    limit: float,
    *,
    at_least: bool = False,
    unit: str = "",
) -> None:
    if value is None:
        row.targets.append(f"{label}: n/a")
        return
    ok = value >= limit if at_least else value <= limit
    row.targets.append(f"{label}: {value:.3g}{unit} {'ok' if ok else 'MISS'}")


# ----------------------------------------------------------------------------- pipeline adapters


class NotAvailable(Exception):
    """The entry point a stage needs is not in the tree (yet)."""


@dataclass
class PipelineContext:
    """What the adapters share: inputs, settings and the outputs of earlier stages."""

    session: SynthSession
    out_dir: Path
    settings: Settings
    compress_source: Path | None  # the file the compressed copy is made from
    overrides: dict[str, Callable[..., Any]]
    inputs: list[SegmentInput] = field(default_factory=list)  # probed, as planned
    timeline: Timeline | None = None
    audio: Path | None = None
    merged: Path | None = None

    def entry(self, stage: str, default: Callable[..., Any]) -> Callable[..., Any]:
        """The callable a stage uses: ``--call`` override, else the default."""
        return self.overrides.get(stage, default)


@dataclass(frozen=True)
class AdapterRun:
    output: Path | None
    called: list[str]
    # Set when the adapter timed only its critical part itself (e.g. what is left to do after
    # the session ends); otherwise the whole adapter call is timed.
    timing: Timing | None = None


def _name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


# Result fields worth showing next to what was called (e.g. which merge path ran).
_RESULT_FIELDS = (
    "video_copied",
    "video_codec",
    "fallback_reason",
    "chunks",
    "reused",
    "encoded",
    "preset",
    "frames_in",
    "frames_out",
)


def _result_notes(result: object) -> list[str]:
    notes = []
    for name in _RESULT_FIELDS:
        value = getattr(result, name, None)
        if value is not None:
            notes.append(f"{name}={value}")
    return notes


def adapt_plan(ctx: PipelineContext) -> AdapterRun:
    """Read session.json, probe every segment, plan the timeline (as workers.stages does)."""
    from shared.sessiondir import load_manifest, segment_file
    from workers.media.probe import probe
    from workers.media.timeline import SegmentInput, plan_timeline

    plan = ctx.entry("plan", plan_timeline)
    manifest = load_manifest(ctx.session.directory)
    inputs: list[SegmentInput] = []
    for seg in manifest.segments:
        path = segment_file(ctx.session.directory, seg)
        duration = probe(path).duration
        if seg.duration is not None:
            duration = min(seg.duration, duration)
        offset = None
        if seg.started_at is not None:
            offset = max(0.0, (seg.started_at - manifest.started_at).total_seconds())
        inputs.append(
            SegmentInput(kind=seg.kind, path=str(path), started_at=offset, duration=duration)
        )
    ctx.inputs = inputs
    ctx.timeline = plan(inputs, cut_pauses=ctx.settings.cut_pauses)
    return AdapterRun(None, [_name(load_manifest), f"{_name(probe)} x{len(inputs)}", _name(plan)])


def adapt_audio(ctx: PipelineContext) -> AdapterRun:
    """Whole-session audio in one pass: decode, place to the sample, encode AAC once."""
    from workers.media.audio import render_audio

    if ctx.timeline is None:
        raise NotAvailable("needs the plan stage")
    fn = ctx.entry("audio", render_audio)
    out = ctx.out_dir / "pipeline-audio.m4a"
    result = fn(
        ctx.timeline,
        out,
        sample_rate=ctx.settings.audio_sample_rate,
        bitrate=ctx.settings.audio_bitrate,
    )
    ctx.audio = out
    return AdapterRun(out, [_name(fn), *_result_notes(result)])


def _chunked_entry(ctx: PipelineContext, stage: str, attr: str) -> Callable[..., Any]:
    if stage in ctx.overrides:
        return ctx.overrides[stage]
    try:
        module = importlib.import_module("workers.media.aacchunk")
    except ModuleNotFoundError as exc:
        raise NotAvailable("workers.media.aacchunk is not in the tree") from exc
    fn = getattr(module, attr, None)
    if fn is None:
        raise NotAvailable(f"workers.media.aacchunk has no {attr}()")
    return fn


def adapt_audio_chunked(ctx: PipelineContext) -> AdapterRun:
    """Whole-session audio cut into chunks encoded in parallel threads, then stream-copied."""
    if ctx.timeline is None:
        raise NotAvailable("needs the plan stage")
    fn = _chunked_entry(ctx, "audio-chunked", "concat_audio_chunked")
    out = ctx.out_dir / "pipeline-audio-chunked.m4a"
    s = ctx.settings
    result = fn(ctx.timeline, out, sample_rate=s.audio_sample_rate, bitrate=s.audio_bitrate)
    ctx.audio = ctx.audio or out
    return AdapterRun(out, [_name(fn), *_result_notes(result)])


def adapt_audio_after_end(ctx: PipelineContext) -> AdapterRun:
    """Incremental audio: chunks encoded while recording, only the tail timed at the end.

    Untimed "during recording": one ``encode_settled_chunks`` pass over every segment that
    had ended before the last audio segment started (what has arrived by then). Timed "after
    the session ends": ``concat_audio_chunked`` with the same chunk store.
    """
    from workers.media.timeline import plan_timeline

    if ctx.timeline is None:
        raise NotAvailable("needs the plan stage")
    settle = _chunked_entry(ctx, "audio-settle", "encode_settled_chunks")
    finish = _chunked_entry(ctx, "audio-after-end", "concat_audio_chunked")
    s = ctx.settings
    store = ctx.out_dir / "aac-chunks"
    shutil.rmtree(store, ignore_errors=True)
    last_start = ctx.session.of_kind("audio")[-1].start_s
    arrived = [
        i
        for i in ctx.inputs
        if i.started_at is not None and i.started_at + i.duration <= last_start + 1e-6
    ]
    before = plan_timeline(arrived, cut_pauses=s.cut_pauses)
    early = settle(before, store, sample_rate=s.audio_sample_rate, bitrate=s.audio_bitrate)
    out = ctx.out_dir / "pipeline-audio-after-end.m4a"
    result, timing = timed(
        lambda: finish(
            ctx.timeline, out, sample_rate=s.audio_sample_rate, bitrate=s.audio_bitrate,
            store=store,
        )
    )  # fmt: skip
    during = f"during recording: {_name(settle)} ({len(arrived)} segments arrived)"
    during += "".join(f", {n}" for n in _result_notes(early))
    notes = [f"after end: {_name(finish)}(store=...)", *_result_notes(result), during]
    return AdapterRun(out, notes, timing=timing)


def adapt_merge(ctx: PipelineContext) -> AdapterRun:
    """The playable MP4 from the timeline's video and the pipeline's audio."""
    from workers.media.merge import mux_playable

    if ctx.timeline is None or ctx.audio is None:
        raise NotAvailable("needs the plan and audio stages")
    fn = ctx.entry("merge", mux_playable)
    out = ctx.out_dir / "pipeline-playable.mp4"
    s = ctx.settings
    result = fn(
        ctx.timeline, ctx.audio, out, fps=s.video_fps, crf=s.video_crf, preset=s.video_preset
    )
    ctx.merged = out
    return AdapterRun(out, [_name(fn), *_result_notes(result)])


def adapt_compress(ctx: PipelineContext) -> AdapterRun:
    """The compressed copy, made from the same file as the plain command's."""
    fn = ctx.overrides.get("compress")
    if fn is None:
        try:
            module = importlib.import_module("workers.media.compress")
        except ModuleNotFoundError as exc:
            raise NotAvailable("workers.media.compress is not in the tree yet") from exc
        fn = getattr(module, "compress_video", None)
        if fn is None:
            raise NotAvailable("workers.media.compress has no compress_video()")
    if ctx.compress_source is None:
        raise NotAvailable("no source MP4 to compress")
    out = ctx.out_dir / "pipeline-compressed.mp4"
    params = inspect.signature(fn).parameters
    level = next((p for p in COMPRESS_LEVEL_PARAMS if p in params), None)
    kwargs: dict[str, Any] = {level: COMPRESS_LEVEL} if level else {}
    result = fn(ctx.compress_source, out, **kwargs)
    extra = f"({level}={COMPRESS_LEVEL!r})" if level else ""
    return AdapterRun(out, [_name(fn) + extra, *_result_notes(result)])


Adapter = Callable[[PipelineContext], AdapterRun]
PIPELINE_STAGES: tuple[tuple[str, str, Adapter], ...] = (
    # (key for --call, table label, adapter)
    ("plan", "plan (probe + plan_timeline)", adapt_plan),
    ("audio", "audio, one pass (whole session)", adapt_audio),
    ("audio-chunked", "audio, chunked (whole session)", adapt_audio_chunked),
    ("audio-after-end", "audio after session end (incremental)", adapt_audio_after_end),
    ("merge", "playable MP4", adapt_merge),
    ("compress", "compressed copy", adapt_compress),
)


# --call keys: one per stage, plus the untimed "during recording" step of audio-after-end.
OVERRIDE_KEYS = (*(key for key, _, _ in PIPELINE_STAGES), "audio-settle")


def _load_overrides(specs: list[str]) -> dict[str, Callable[..., Any]]:
    out: dict[str, Callable[..., Any]] = {}
    for spec in specs:
        stage, _, target = spec.partition("=")
        module_name, _, attr = target.partition(":")
        if stage not in OVERRIDE_KEYS or not module_name or not attr:
            raise SystemExit(
                f"--call {spec!r}: expected STAGE=module:function, STAGE in {OVERRIDE_KEYS}"
            )
        out[stage] = getattr(importlib.import_module(module_name), attr)
    return out


# ----------------------------------------------------------------------------- the run


def _size(path: Path | None) -> int | None:
    return path.stat().st_size if path is not None and path.is_file() else None


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Bench:
    session: SynthSession
    out_dir: Path
    repeat: int
    quality: bool
    quality_stride: int
    rows: list[Row] = field(default_factory=list)
    marker_onset_s: float = 0.0  # where the detector finds the marker in a source segment

    @property
    def seconds(self) -> float:
        return self.session.spec.seconds

    @property
    def original_bytes(self) -> int:
        return self.session.video_bytes + self.session.audio_bytes

    @property
    def audio_marks(self) -> list[float]:
        return [s.start_s for s in self.session.of_kind("audio")]

    def _timed_row(self, row: Row, output: Path | None, timing: Timing) -> Row:
        row.wall_s, row.cpu_s = timing.wall_s, timing.cpu_s
        row.realtime_x = self.seconds / timing.wall_s if timing.wall_s > 0 else None
        row.size_bytes = _size(output)
        row.output = str(output) if row.size_bytes is not None else None
        self.rows.append(row)
        return row

    def plain(self, stage: str, summary: str, cmd: baselines.PlainCommand) -> Row | None:
        _say(f"plain    {stage} ...")
        row = Row("plain", stage, [summary], command=cmd.shell)
        try:
            _, timing = timed(lambda: run_command(cmd), self.repeat)
        except Exception as exc:  # keep going: report the failure in the table
            row.note = f"failed: {exc}"
            self.rows.append(row)
            return None
        return self._timed_row(row, cmd.output, timing)

    def pipeline(self, ctx: PipelineContext, key: str, label: str, adapter: Adapter) -> Row | None:
        _say(f"pipeline {label} ...")
        row = Row("pipeline", label, [])
        try:
            run, timing = self._run_adapter(ctx, adapter)
        except NotAvailable as exc:
            row.called, row.note = [f"{key}: n/a"], f"n/a: {exc}"
            self.rows.append(row)
            return None
        except Exception as exc:
            row.called, row.note = [f"{key}: failed"], f"failed: {type(exc).__name__}: {exc}"
            self.rows.append(row)
            return None
        row.called = run.called
        self._timed_row(row, run.output, timing)
        if run.timing is not None:  # only part of the work was timed: not a speed
            row.realtime_x = None
        return row

    def _run_adapter(self, ctx: PipelineContext, adapter: Adapter) -> tuple[AdapterRun, Timing]:
        """Best of ``repeat`` runs, by the adapter's own timing when it reports one."""
        best: tuple[AdapterRun, Timing] | None = None
        for _ in range(max(1, self.repeat)):
            run, outer = timed(lambda: adapter(ctx))
            timing = run.timing or outer
            if best is None or timing.wall_s < best[1].wall_s:
                best = (run, timing)
        assert best is not None
        return best

    def drift(self, row: Row | None) -> None:
        """Locate the audio markers in the row's output (audio track of an M4A or MP4)."""
        if row is not None and row.output is not None:
            drift = marker_drift(Path(row.output), self.audio_marks, onset_s=self.marker_onset_s)
            row.put_drift(drift)

    def compressed_extras(self, row: Row | None, source: Path | None, decode: Row | None) -> None:
        if row is None or row.size_bytes is None:
            return
        row.size_pct = 100.0 * row.size_bytes / self.original_bytes
        if self.quality and source is not None and row.output is not None:
            _say(f"measure  SSIM/PSNR of {row.group} {row.stage} ...")
            try:
                row.put_quality(video_quality(Path(row.output), source, stride=self.quality_stride))
            except RuntimeError as exc:
                row.note = f"quality not measured: {exc}"
        if decode is not None and decode.wall_s and row.wall_s:
            _check(
                row,
                f"<={COMPRESS_MAX_VS_DECODE:g}x decode-only",
                row.wall_s / decode.wall_s,
                COMPRESS_MAX_VS_DECODE,
                unit="x",
            )
        _check(
            row,
            f"<={COMPRESSED_MAX_PCT:g}% of original",
            row.size_pct,
            COMPRESSED_MAX_PCT,
            unit="%",
        )


def _ratio(row: Row | None, ref: Row | None, ref_label: str, limit: float) -> None:
    if row is None:
        return
    if ref is None or not ref.wall_s or row.wall_s is None:
        _check(row, f"<={limit:g}x {ref_label}", None, limit)
        return
    row.vs_plain, row.vs_plain_ref = row.wall_s / ref.wall_s, ref_label
    if ref.cpu_s and row.cpu_s is not None:
        row.vs_plain_cpu = row.cpu_s / ref.cpu_s
    _check(row, f"<={limit:g}x {ref_label}", row.vs_plain, limit, unit="x")


def _check_audio(row: Row | None, exact: Row | None, *, whole_session: bool) -> None:
    """Audio targets: ready <= 5 s after the end; whole-session renders also speed and ratio."""
    if row is None:
        return
    limit = AUDIO_AFTER_END_MAX_S
    _check(row, f"<={limit:g}s after end", row.wall_s, limit, unit="s")
    if whole_session:
        rt = AUDIO_MIN_REALTIME_X
        _check(row, f">={rt:g}x realtime", row.realtime_x, rt, at_least=True, unit="x")
        _ratio(row, exact, "plain exact", MAX_VS_PLAIN)


def run_bench(args: argparse.Namespace) -> tuple[Bench, dict[str, Any]]:
    """Synthesise, run plain commands and pipeline stages, measure; return rows and metadata."""
    spec = SessionSpec(
        minutes=args.minutes, audio_segments=args.audio_segments, video_segments=args.video_segments
    )
    session = ensure_session(spec, SESSIONS_DIR)
    out_dir = RUNS_DIR / spec.key
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    bench = Bench(session, out_dir, args.repeat, not args.no_quality, args.quality_stride)
    load_before = os.getloadavg()
    started = time.perf_counter()

    audio_segs, video_segs = session.of_kind("audio"), session.of_kind("video")

    # (a) plain ffmpeg
    naive = bench.plain(
        "audio, naive (copy)", "concat demuxer, -c copy", baselines.audio_naive(audio_segs, out_dir)
    )
    exact_cmd = baselines.audio_exact(audio_segs, out_dir)
    exact = bench.plain(
        "audio, exact (re-encode)",
        f"{len(audio_segs)} inputs, apad+atrim per slot, concat filter, AAC",
        exact_cmd,
    )
    playable_cmd = baselines.playable_mp4(video_segs, exact_cmd.output, out_dir)
    playable = None
    if exact is not None:
        playable = bench.plain(
            "playable MP4 (copy mux)",
            "concat demuxer video + exact audio, -c copy +faststart",
            playable_cmd,
        )
    source = playable_cmd.output if playable is not None else None
    decode = plain_compressed = None
    if source is not None:
        decode = bench.plain(
            "decode only", "-i playable.mp4 -map 0:v -f null -", baselines.decode_only(source)
        )
        plain_compressed = bench.plain(
            "compressed copy",
            f"mpdecimate, -fps_mode vfr, x264 {baselines.COMPRESS_PRESET} stillimage "
            f"crf {baselines.COMPRESS_CRF}, -c:a copy",
            baselines.compressed(source, out_dir),
        )

    # (b) pipeline engine functions
    ctx = PipelineContext(session, out_dir, Settings(), source, _load_overrides(args.call))
    rows: dict[str, Row | None] = {}
    for key, label, adapter in PIPELINE_STAGES:
        rows[key] = bench.pipeline(ctx, key, label, adapter)

    # measurements (not timed)
    _say("measure  audio markers ...")
    first = find_markers(audio_segs[0].path)
    bench.marker_onset_s = first[0] / AUDIO_RATE_HZ if first else 0.0
    audio_rows = [rows["audio"], rows["audio-chunked"], rows["audio-after-end"]]
    for row in (naive, exact, playable, *audio_rows, rows["merge"]):
        bench.drift(row)
    bench.compressed_extras(plain_compressed, source, decode)
    bench.compressed_extras(rows["compress"], source, decode)

    for key in ("audio", "audio-chunked", "audio-after-end"):
        _check_audio(rows[key], exact, whole_session=key != "audio-after-end")
    _ratio(rows["merge"], playable, "plain copy mux", PLAYABLE_MAX_VS_COPY_MUX)
    _ratio(rows["compress"], plain_compressed, "plain compressed", MAX_VS_PLAIN)

    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "ffmpeg": imageio_ffmpeg.get_ffmpeg_version(),
        "pyav": av.__version__,
        "session": {
            "key": spec.key,
            "dir": str(session.directory),
            "seconds": spec.seconds,
            "video_segments": spec.video_segments,
            "video_segment_s": spec.video_segment_s,
            "audio_segments": spec.audio_segments,
            "audio_segment_s": spec.audio_segment_s,
            "video_mbit_s": round(session.video_bytes * 8 / spec.seconds / 1e6, 2),
            "original_bytes": bench.original_bytes,
            "synthesised_s": session.generated_s,
        },
        "outputs": str(out_dir),
        "compress_source": str(source) if source else None,
        "repeat": args.repeat,
        "quality_stride_frames": args.quality_stride if not args.no_quality else None,
        "total_s": round(time.perf_counter() - started, 1),
    }
    return bench, meta


# ----------------------------------------------------------------------------- report


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _mb(size: int | None) -> str:
    if size is None:
        return "-"
    mb = size / BYTES_PER_MB
    return f"{mb:.2f}" if mb < 10 else f"{mb:.0f}"


def _cells(row: Row) -> list[str]:
    drift = "-"
    if row.markers is not None:
        drift = f"{_f(row.drift_last_ms, '+.1f')} / {_f(row.drift_max_ms, '.1f')} ({row.markers})"
    quality = []
    if row.size_pct is not None:
        quality.append(f"{row.size_pct:.1f}% size")
    if row.ssim is not None:
        quality.append(f"SSIM {row.ssim:.4f}")
    if row.psnr_db is not None:
        quality.append(f"PSNR {row.psnr_db:.1f} dB")
    vs = "-" if row.vs_plain is None else f"{row.vs_plain:.2f}x"
    if row.vs_plain_cpu is not None:
        vs += f" (CPU {row.vs_plain_cpu:.2f}x)"
    return [
        f"{row.group}: {row.stage}",
        _f(row.wall_s, ".2f"),
        _f(row.cpu_s, ".2f"),
        _f(row.realtime_x, ".0f"),
        _mb(row.size_bytes),
        vs,
        drift,
        ", ".join(quality) or "-",
        "; ".join(row.targets) or (row.note or "-"),
    ]


HEADERS = [
    "stage",
    "wall s",
    "CPU s",
    "x realtime",
    "MB",
    "vs plain",
    "drift last/max ms",
    "size / quality",
    "targets",
]


def text_table(rows: list[Row]) -> str:
    cells = [HEADERS] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(bench: Bench, meta: dict[str, Any]) -> str:
    s = meta["session"]
    out = [
        f"Session: {s['seconds'] / 60:g} min ({s['video_segments']} video segments of "
        f"{s['video_segment_s']:g} s at {s['video_mbit_s']} Mbit/s, {s['audio_segments']} "
        f"audio segments of {s['audio_segment_s']:g} s); {meta['host']['cpus']} CPUs, load "
        f"{meta['host']['loadavg_before']} before / {meta['host']['loadavg_after']} after; "
        f"ffmpeg {meta['ffmpeg']}, PyAV {meta['pyav']}; `{meta['command']}`",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    for row in bench.rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row)) + " |")
    out += ["", "What each row ran:", ""]
    for row in bench.rows:
        what = "; ".join(row.called) + (f" ({row.note})" if row.note else "")
        out.append(f"- {row.group}: {row.stage}: `{what}`")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="session length (default 30)")
    p.add_argument("--audio-segments", type=int, default=60)
    p.add_argument(
        "--video-segments",
        type=int,
        default=30,
        help="equal video segments (default 30: 1-minute segments at 30 min)",
    )
    p.add_argument("--repeat", type=int, default=1, help="run each step N times, keep the best")
    p.add_argument("--no-quality", action="store_true", help="skip SSIM/PSNR")
    p.add_argument(
        "--quality-stride",
        type=int,
        default=DEFAULT_QUALITY_STRIDE_FRAMES,
        help="compare one frame in N (1 = every frame)",
    )
    p.add_argument(
        "--call",
        action="append",
        default=[],
        metavar="STAGE=module:function",
        help="use another callable (same arguments) for a pipeline stage; STAGE is one of "
        f"{', '.join(OVERRIDE_KEYS)} (repeatable)",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="write rows and metadata as JSON")
    p.add_argument(
        "--markdown",
        nargs="?",
        const="-",
        metavar="PATH",
        help="print (or write to PATH) the table as markdown",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench, meta = run_bench(args)
    print()
    print(
        f"session {meta['session']['key']}: {meta['session']['seconds']:g} s, "
        f"video {meta['session']['video_mbit_s']} Mbit/s, load {meta['host']['loadavg_before']}"
        f" -> {meta['host']['loadavg_after']}, outputs in {meta['outputs']}"
    )
    print(text_table(bench.rows))
    print()
    for row in bench.rows:
        print(
            f"{row.group}: {row.stage}: {'; '.join(row.called)}"
            + (f"  [{row.note}]" if row.note else "")
        )
    if args.json:
        payload = {"meta": meta, "rows": [asdict(r) for r in bench.rows]}
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    if args.markdown:
        text = markdown(bench, meta)
        if args.markdown == "-":
            print()
            print(text)
        else:
            Path(args.markdown).write_text(text + "\n", encoding="utf-8")
    failed = [r for r in bench.rows if r.note and r.note.startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
