"""Time chapter detection on a long 1080p30 slide session against the plain decode it needs.

    python bench/bench_chapters.py --minutes 5 [--json out.json] [--markdown [out.md]]

The session is a :func:`synthetic.slides.random_lecture` (a slide every 18-72 s, typing, a
clock, scrolling and a pointer inside slides, half-second cross-fades), written once by
:func:`synthetic.slides.write_lecture_video` as H.264 1920x1080 at 30 fps with a keyframe
every 2 s (our recorder's GOP) and cached under ``bench/out/chapters``.

Measured, each in a fresh child process (so its peak memory is its own):

* ``detect_chapters`` end to end, split into sampling + placing the changes, and OCR (from
  its progress callback), with its accuracy against the lecture (boundaries within 1 s of
  a true change, spurious ones, titles read exactly);
* sampling alone, keyframes only (what runs on this GOP) and every frame decoded (what runs
  on a sparse GOP), and a frame-threaded full decode (PyAV ``thread_type="AUTO"``);
* the plain ffmpeg decodes they compare with: ``-skip_frame nokey`` (keyframes only) and
  ``-vf fps=1`` (every frame decoded, one kept a second).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(ROOT))

from synthetic.ffmpeg_session import ffmpeg_exe  # noqa: E402
from synthetic.lecture import Lecture  # noqa: E402
from synthetic.slides import random_lecture, write_lecture_video  # noqa: E402

OUT = ROOT / "bench" / "out" / "chapters"
WIDTH, HEIGHT, FPS = 1920, 1080, 30
KEYFRAME_S = 2.0
TRANSITION_S = 0.5
MEAN_SLIDE_S = 45.0
SEED = 2024
TOLERANCE_S = 1.0
#: The phase boundary in detect_chapters' progress: sampling and placing end at 0.7.
_OCR_STARTS_AT = 0.7


def lecture_for(minutes: float) -> Lecture:
    return random_lecture(minutes * 60.0, SEED, mean_slide_s=MEAN_SLIDE_S)


def ensure_video(minutes: float) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"lecture-{minutes:g}min-{HEIGHT}p{FPS}.mp4"
    if not path.exists():
        tmp = path.with_suffix(".partial.mp4")
        started = time.perf_counter()
        write_lecture_video(
            tmp,
            lecture_for(minutes),
            width=WIDTH,
            height=HEIGHT,
            fps=FPS,
            seed=SEED,
            keyframe_interval_s=KEYFRAME_S,
            transition_s=TRANSITION_S,
        )
        tmp.replace(path)
        print(f"wrote {path} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path


# -- child side: one measurement, printed as JSON ----------------------------------------------


def _peak_mib() -> float:
    """This process's peak resident memory. VmHWM belongs to the address space exec made;
    ru_maxrss would carry over the parent's peak through fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_detect(video: Path, minutes: float) -> dict[str, Any]:
    from workers.enrich.chaptering import detect_chapters

    marks: dict[str, float] = {}
    start = time.perf_counter()

    def progress(fraction: float) -> None:
        if fraction >= _OCR_STARTS_AT - 1e-9 and "ocr_start" not in marks:
            marks["ocr_start"] = time.perf_counter()

    chapters = detect_chapters(video, progress=progress)
    end = time.perf_counter()
    lecture = lecture_for(minutes)
    truth = [t + TRANSITION_S / 2 for t in lecture.changes]
    found = [c.start for c in chapters[1:]]
    matched = sum(1 for t in truth if any(abs(f - t) <= TOLERANCE_S for f in found))
    spurious = sum(1 for f in found if all(abs(f - t) > TOLERANCE_S for t in truth))
    titles = {s.title for s in lecture.slides}
    exact = sum(1 for c in chapters if c.title in titles)
    ocr_start = marks.get("ocr_start", end)
    return {
        "total_s": end - start,
        "sampling_s": ocr_start - start,
        "ocr_s": end - ocr_start,
        "chapters": len(chapters),
        "true_changes": len(truth),
        "matched": matched,
        "spurious": spurious,
        "titles_exact": exact,
        "worst_error_s": max(
            (min(abs(f - t) for f in found) for t in truth if found), default=None
        ),
        "peak_mib": _peak_mib(),
    }


def child_sample(video: Path, mode: str) -> dict[str, Any]:
    from workers.enrich.frames import open_video

    start = time.perf_counter()
    if mode == "threaded":  # every frame through a frame-threaded decoder, one kept a second
        import av

        count = 0
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_type = "AUTO"
            stream.codec_context.thread_count = 2
            due = 0.0
            for frame in container.decode(stream):
                if frame.time is not None and frame.time >= due:
                    frame.reformat(width=320, height=180, format="gray").to_ndarray()
                    count += 1
                    due += 1.0
    else:
        with open_video(video) as clip:
            count = sum(1 for _ in clip.samples(full_decode=mode == "full"))
    return {"seconds": time.perf_counter() - start, "samples": count, "peak_mib": _peak_mib()}


# -- parent side -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    seconds: float
    per_minute: float
    peak_mib: float | None = None
    note: str = ""


def run_child(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_ffmpeg(args: list[str]) -> float:
    argv = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", *args]
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", nargs="?", const="-", default=None)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.child:
        kind, video, extra = opts.child[0], Path(opts.child[1]), opts.child[2]
        result = child_detect(video, float(extra)) if kind == "detect" else None
        if kind == "sample":
            result = child_sample(video, extra)
        print(json.dumps(result))
        return 0

    minutes = opts.minutes
    video = ensure_video(minutes)
    size_mb = video.stat().st_size / 1e6
    detect = run_child("detect", str(video), f"{minutes:g}")
    keyframes = run_child("sample", str(video), "keyframes")
    full = run_child("sample", str(video), "full")
    threaded = run_child("sample", str(video), "threaded")
    plain_key = run_ffmpeg(["-skip_frame", "nokey", "-i", str(video), "-an", "-f", "null", "-"])
    plain_full = run_ffmpeg(["-i", str(video), "-an", "-vf", "fps=1", "-f", "null", "-"])

    def row(name: str, seconds: float, peak: float | None = None, note: str = "") -> Row:
        return Row(name, round(seconds, 2), round(seconds / minutes, 3), peak, note)

    rows = [
        row(
            "detect_chapters (all)",
            detect["total_s"],
            round(detect["peak_mib"]),
            f"{detect['chapters']} chapters",
        ),
        row("  sampling + scene detection + placing", detect["sampling_s"]),
        row("  OCR of the titles", detect["ocr_s"], note=f"{detect['chapters']} frames"),
        row(
            "sampling alone, keyframes only",
            keyframes["seconds"],
            round(keyframes["peak_mib"]),
            f"{keyframes['samples']} samples",
        ),
        row(
            "sampling alone, every frame decoded",
            full["seconds"],
            round(full["peak_mib"]),
            f"{full['samples']} samples",
        ),
        row(
            "every frame decoded, frame threads (2)",
            threaded["seconds"],
            round(threaded["peak_mib"]),
            f"{threaded['samples']} samples",
        ),
        row("plain: ffmpeg -skip_frame nokey -i X -f null -", plain_key),
        row("plain: ffmpeg -i X -vf fps=1 -f null -", plain_full),
    ]
    accuracy = {
        k: detect[k]
        for k in ("true_changes", "matched", "spurious", "titles_exact", "worst_error_s")
    }
    ratios = {
        "sampling_vs_plain_nokey": round(keyframes["seconds"] / plain_key, 2),
        "full_vs_plain_fps1": round(full["seconds"] / plain_full, 2),
        "detect_sampling_vs_plain_nokey": round(detect["sampling_s"] / plain_key, 2),
    }
    extrapolated_30 = round(detect["total_s"] / minutes * 30.0, 1)
    summary = {
        "minutes": minutes,
        "video": str(video.relative_to(ROOT)) if video.is_relative_to(ROOT) else str(video),
        "video_mb": round(size_mb, 1),
        "machine": {"cpus": _cpus(), "python": platform.python_version()},
        "rows": [asdict(r) for r in rows],
        "accuracy": accuracy,
        "ratios": ratios,
        "extrapolated_30_min_s": extrapolated_30,
    }
    if opts.json:
        opts.json.write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown(summary, rows)
    if opts.markdown and opts.markdown != "-":
        Path(opts.markdown).write_text(table)
    print(table)
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def markdown(summary: dict[str, Any], rows: list[Row]) -> str:
    m = summary["minutes"]
    lines = [
        f"Session: {m:g} min of slides, {WIDTH}x{HEIGHT} {FPS} fps H.264, keyframe every "
        f"{KEYFRAME_S:g} s, {summary['video_mb']} MB; {summary['machine']['cpus']} CPUs.",
        "",
        "| | wall s | s per recorded minute | peak MiB | |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        peak = "" if r.peak_mib is None else f"{r.peak_mib:g}"
        lines.append(f"| {r.name} | {r.seconds:.2f} | {r.per_minute:.3f} | {peak} | {r.note} |")
    a = summary["accuracy"]
    ratios = summary["ratios"]
    worst = "-" if a["worst_error_s"] is None else f"{a['worst_error_s']:.2f} s"
    lines += [
        "",
        f"Accuracy: {a['matched']}/{a['true_changes']} changes found within {TOLERANCE_S:g} s "
        f"(worst {worst}), {a['spurious']} spurious, "
        f"{a['titles_exact']} titles read exactly.",
        f"Keyframe sampling / plain `-skip_frame nokey`: {ratios['sampling_vs_plain_nokey']}x; "
        f"full-decode sampling / plain `-vf fps=1`: {ratios['full_vs_plain_fps1']}x.",
        f"Extrapolated to 30 minutes: {summary['extrapolated_30_min_s']} s for all of "
        "detect_chapters (target: under 180 s).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
