"""One ffmpeg recording process: which binary and encoder, starting it, stopping it gently.

A *run* is one ffmpeg process (its command comes from :mod:`capture_agent.ffmpeg_cmd`);
the recorder starts a new one after every pause. It is its own process group, so a Ctrl-C
in the terminal reaches only the recorder, which then stops ffmpeg itself, once, in order:
``SIGINT`` (ffmpeg finishes its files), then ``SIGTERM``, ``SIGKILL`` only as the last
resort. Its segment files are read through :class:`capture_agent.runfiles.RunFiles`.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO

from capture_agent.ffmpeg_cmd import (
    ENCODER_X264,
    Source,
    build_record_command,
    choose_video_encoder,
    parse_encoders,
)
from capture_agent.runfiles import RunFiles
from shared.segments import SegmentKind
from synthetic.lavfi import SyntheticSource

log = logging.getLogger(__name__)

#: Wait after SIGINT for ffmpeg to finish its last segment, in seconds.
STOP_GRACE_S = 15.0
#: Wait after SIGTERM before SIGKILL (which may truncate the last fragment), in seconds.
TERM_GRACE_S = 5.0
#: Bytes of ffmpeg's log quoted when it fails.
LOG_TAIL_BYTES = 2000
#: How long ``ffmpeg -encoders`` may take, in seconds.
ENCODER_PROBE_TIMEOUT_S = 15.0


def default_ffmpeg(platform: str = sys.platform) -> str:
    """On a Mac an ``ffmpeg`` on PATH (Homebrew's has avfoundation and VideoToolbox, which
    a static build may lack); else imageio-ffmpeg's binary (``IMAGEIO_FFMPEG_EXE`` overrides).
    """
    if platform == "darwin" and (found := shutil.which("ffmpeg")):
        return found
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def detect_encoder(ffmpeg: str, platform: str = sys.platform) -> str:
    """``h264_videotoolbox`` when on macOS and this ffmpeg has it, else ``libx264``."""
    if platform != "darwin":
        return ENCODER_X264
    try:
        out = subprocess.run(
            [ffmpeg, "-hide_banner", "-encoders"],
            capture_output=True,
            text=True,
            timeout=ENCODER_PROBE_TIMEOUT_S,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ENCODER_X264
    return choose_video_encoder(platform, parse_encoders(out))


def recorded_kinds(source: Source) -> list[SegmentKind]:
    """Video always; audio when the source has a microphone (or a synthetic tone)."""
    if isinstance(source, SyntheticSource):
        has_audio = source.audio
    else:
        has_audio = source.audio_device is not None
    return [SegmentKind.VIDEO, SegmentKind.AUDIO] if has_audio else [SegmentKind.VIDEO]


class FfmpegRun(RunFiles):
    """One ffmpeg process and the segments it has finished so far."""

    def __init__(
        self,
        folder: Path,
        source: Source,
        *,
        segment_seconds: float,
        ffmpeg: str,
        encoder: str,
        number: int,
        next_numbers: dict[SegmentKind, int],
        anchor: datetime,
        max_seconds: float | None,
    ) -> None:
        super().__init__(
            folder,
            number=number,
            kinds=recorded_kinds(source),
            start_numbers=next_numbers,
            anchor=anchor,
        )
        self.argv = build_record_command(
            ffmpeg,
            source,
            segment_seconds=segment_seconds,
            video_start=next_numbers[SegmentKind.VIDEO],
            audio_start=next_numbers[SegmentKind.AUDIO],
            run=number,
            encoder=encoder,
            max_seconds=max_seconds,
        )
        self.log_path = self.folder / f".ffmpeg-run{number:03d}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        log.debug("run %d: %s", number, " ".join(self.argv))
        try:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._log,
                start_new_session=True,  # own process group: see the module's docstring
            )
        except OSError:
            self._log.close()
            raise

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def stop(self) -> int:
        """End ffmpeg gracefully: SIGINT, then SIGTERM, SIGKILL only as the last resort."""
        steps: list[tuple[Callable[[], None], float]] = [
            (lambda: self.proc.send_signal(signal.SIGINT), STOP_GRACE_S),
            (self.proc.terminate, TERM_GRACE_S),
            (self.proc.kill, TERM_GRACE_S),
        ]
        for action, grace in steps:
            if self.proc.poll() is not None:
                break
            action()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("ffmpeg (pid %d) still running after %.0f s", self.proc.pid, grace)
        return self.close()

    def close(self) -> int:
        code = self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return code

    def log_tail(self) -> str:
        try:
            data = self.log_path.read_bytes()[-LOG_TAIL_BYTES:]
        except OSError:
            return ""
        return data.decode("utf-8", "replace").strip()
