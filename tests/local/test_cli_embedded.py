"""The embedded default through the real CLI: SQLite, local storage, in-process worker."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from synthetic.plan import SyntheticSpec
from synthetic.session import record_synthetic_session
from tests.support import ROOT
from tests.support.cli import clean_env
from tests.support.media import decode
from workers.pipeline import OPTIONAL, STAGES

pytestmark = pytest.mark.integration

STARTED = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def sessionpipe(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    return subprocess.run(
        [sys.executable, "-m", "sessionpipe.cli", *args, "--home", str(home)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def status_json(home: Path, session_id: str) -> dict[str, object]:
    result = sessionpipe(home, "status", session_id, "--json")
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


@pytest.mark.parametrize(
    ("spec", "codecs"),
    [
        (
            SyntheticSpec(
                duration=8.0,
                segment_seconds=4.0,
                audio_holes=((2.0, 4.0),),
                width=160,
                height=96,
                fps=10,
            ),
            (["h264"], ["aac"]),
        ),
        (
            SyntheticSpec(
                duration=6.0, segment_seconds=3.0, audio=False, width=160, height=96, fps=10
            ),
            (["h264"], []),
        ),
        (
            SyntheticSpec(duration=6.0, segment_seconds=3.0, video=False, audio_holes=()),
            ([], ["aac"]),
        ),
    ],
    ids=["audio+video", "video-only", "audio-only"],
)
def test_process_a_session_folder(
    tmp_path: Path, spec: SyntheticSpec, codecs: tuple[list[str], list[str]]
) -> None:
    folder = record_synthetic_session(
        tmp_path / "rec", session_id="cli-1", name="cli", spec=spec, started_at=STARTED
    )
    home = tmp_path / "home"
    result = sessionpipe(home, "process", str(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "finished MP4" in result.stdout
    report = status_json(home, "cli-1")
    assert report["outcome"] == "completed"
    stages = {s["stage"]: s for s in report["stages"]}  # type: ignore[attr-defined]
    assert set(stages) == {stage.value for stage in STAGES}
    assert all(s["attempts"] == 1 for s in stages.values())
    media = {stage: s["status"] for stage, s in stages.items() if stage not in OPTIONAL}
    assert set(media.values()) <= {"succeeded", "skipped"}, media
    # SESSIONPIPE_ENRICH=none (tests.support.cli.MEDIA_TESTS_ENV): skipped, and saying why
    assert {stages[stage]["result"]["skipped"] for stage in OPTIONAL} == {
        "not asked for by this session"
    }
    output = Path(stages["finalize"]["output_path"])
    decoded = decode(output)
    assert (decoded.video_codecs, decoded.audio_codecs) == codecs
    measured = decoded.video_duration or decoded.audio_duration
    assert measured is not None and abs(measured - spec.duration) < 0.1
    if decoded.video_duration and decoded.audio_duration:
        assert abs(decoded.video_duration - decoded.audio_duration) < 0.050
    with output.open("rb") as handle:
        head = handle.read(64 * 1024)
    moov, mdat = head.find(b"moov"), head.find(b"mdat")
    assert moov != -1 and (mdat == -1 or moov < mdat), "moov must come first (+faststart)"


def test_failed_stage_exits_nonzero_with_the_reason(tmp_path: Path) -> None:
    spec = SyntheticSpec(
        duration=6.0, segment_seconds=3.0, width=160, height=96, fps=10, audio_holes=()
    )
    folder = record_synthetic_session(
        tmp_path / "rec", session_id="cli-bad", name="bad", spec=spec, started_at=STARTED
    )
    broken = sorted(folder.glob("screen-*.mp4"))[0]
    broken.write_bytes(b"\x00garbage" * 512)
    home = tmp_path / "home"
    result = sessionpipe(home, "process", str(folder))
    assert result.returncode == 1
    assert "merge failed" in result.stderr and broken.name in result.stderr
    report = status_json(home, "cli-bad")
    assert report["outcome"] == "failed"
    assert not list((home / "storage/sessions/cli-bad/derived").glob("*.mp4"))


def test_status_of_unknown_or_hostile_session_is_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert sessionpipe(home, "db", "upgrade").returncode == 0
    unknown = sessionpipe(home, "status", "nope")
    assert unknown.returncode == 2 and "unknown session 'nope'" in unknown.stderr
    hostile = sessionpipe(home, "status", "../etc")
    assert hostile.returncode == 2 and "invalid session id" in hostile.stderr


def test_hostile_session_folder_is_refused_before_storage(tmp_path: Path) -> None:
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "session.json").write_text(
        json.dumps(
            {
                "id": "evil",
                "started_at": "2026-11-21T10:00:00Z",
                "segments": [{"kind": "video", "file": "../../etc/passwd"}],
            }
        )
    )
    home = tmp_path / "home"
    result = sessionpipe(home, "process", str(folder))
    assert result.returncode == 2
    assert "../../etc/passwd" in result.stderr
    assert not (home / "storage").exists()


def test_operator_retries_a_failed_stage_after_fixing_the_input(tmp_path: Path) -> None:
    spec = SyntheticSpec(
        duration=6.0, segment_seconds=3.0, width=160, height=96, fps=10, audio_holes=()
    )
    folder = record_synthetic_session(
        tmp_path / "rec", session_id="cli-fix", name="fix", spec=spec, started_at=STARTED
    )
    broken = sorted(folder.glob("screen-*.mp4"))[1]
    original = broken.read_bytes()
    broken.write_bytes(b"\x00garbage" * 512)
    home = tmp_path / "home"
    assert sessionpipe(home, "process", str(folder)).returncode == 1

    listed = sessionpipe(home, "jobs", "list", "--status", "failed")
    assert "cli-fix" in listed.stdout and "merge" in listed.stdout
    wrong = sessionpipe(home, "jobs", "retry", "cli-fix", "concat_audio")
    assert wrong.returncode == 1 and "no failed/cancelled concat_audio job" in wrong.stderr

    stored = home / "storage/sessions/cli-fix/segments" / broken.name
    stored.write_bytes(original)  # the operator restores the segment
    retried = sessionpipe(home, "jobs", "retry", "cli-fix", "merge")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    report = status_json(home, "cli-fix")
    assert report["outcome"] == "completed"
    stages = {s["stage"]: s for s in report["stages"]}  # type: ignore[attr-defined]
    assert stages["merge"]["attempts"] == 2 and stages["finalize"]["status"] == "succeeded"
