"""The live view: the session as an HLS stream that grows while it records.

Every segment stored while its session records, and the end of the recording, ask for a
*live pass* (``TASK_LIVE_FRAGMENT``, audio queue, beside the audio chunks, never behind a
transcode): each stored video segment whose microphone audio is stored too gets its *live
fragment*, the segment's packets and the recorder's AAC packets of that stretch copied to
where they land on the output timeline known so far (``workers.media.fragment``,
``workers.media.liveaudio``; no encoding). The status API serves them as an HLS playlist
(fMP4 media segments, RFC 8216) that a browser plays through Media Source Extensions (the
session page) and Safari or QuickTime natively, about a segment behind the recorder.

The rules, which keep this a pure view that nothing else depends on:

- A fragment is derived data, not state: its files are written whole (temporary name, then
  rename; the ``.json`` description last, so a fragment exists once its description does)
  and named by the segment and the first 16 hex digits of its content hash, so a repeated
  or redelivered task writes the same bytes under the same names. No database row: a lost
  task leaves a hole the playlist stops at, the finished MP4 covers it.
- Fragments are made by ``workers.livemaker`` (this module is what the API and the
  stages read, free of the stages' imports).
- Audio is the recorder's own AAC, as recorded (the finished track is encoded apart, with
  its sample-exact joins); silence where the microphone has none. A fragment waits for
  its stretch's audio for at most ``workers.livemaker.AUDIO_WAIT_SEGMENTS`` later video
  segments, then is made with silence there.
- The playlist lists fragments in output order up to the first hole; it ends
  (``EXT-X-ENDLIST``) once the session stopped recording and every stored video segment
  has its fragment. Fragments are deleted with the parts (``finalize``, a failed session):
  by then the playable MP4 exists and the page plays that. A fragment written once the
  ``finalize`` job exists deletes the view itself (it may have come after ``finalize``
  deleted it), so nothing is left behind whatever the order.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import select

from shared import models
from shared.db import session_scope
from shared.segments import SegmentKind
from shared.settings import Settings
from shared.storage import Storage

log = logging.getLogger(__name__)

LIVE_DIR: Final = "live"
#: mfhd sequence numbers of a segment's fragments start at 1 + position * this (a 10 s
#: segment with a keyframe every 2 s has 5 fragments; the spacing only keeps them rising).
SEQUENCE_STEP: Final = 1000
#: A step between one fragment's end and the next one's start longer than this (seconds)
#: is a hole: a fragment still missing (its task queued, or lost).
HOLE_S: Final = 0.5
DESCRIPTION_SUFFIX: Final = ".json"
MEDIA_SUFFIX: Final = ".m4s"
INIT_SUFFIX: Final = ".init.mp4"
#: File names the API serves from a session's live folder (nothing else, no path).
SERVED_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,120}(\.m4s|\.init\.mp4)$")
#: HLS target duration when no fragment is listed yet (seconds).
DEFAULT_TARGET_S: Final = 10


@dataclass(frozen=True)
class FragmentInfo:
    """A written live fragment, as its description file tells."""

    segment: str  # the video segment's file name
    start: float  # output seconds
    end: float
    media: str  # file names in the live folder
    init: str
    codecs: str


def live_key(storage: Storage, session_id: str) -> str:
    return storage.derived_key(session_id, LIVE_DIR)


def discard(storage: Storage, session_id: str) -> None:
    """Delete a session's live fragments (its playable MP4 exists, or it failed)."""
    shutil.rmtree(storage.path(live_key(storage, session_id)), ignore_errors=True)


# -- reading them ------------------------------------------------------------------------------
def fragments(storage: Storage, session_id: str) -> list[FragmentInfo]:
    """The session's written fragments in output order (newest one per segment)."""
    folder = storage.path(live_key(storage, session_id))
    newest: dict[str, tuple[float, FragmentInfo]] = {}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.endswith(DESCRIPTION_SUFFIX):
            continue
        try:
            data = json.loads(Path(entry.path).read_bytes())
            info = FragmentInfo(
                segment=str(data["segment"]),
                start=float(data["start"]),
                end=float(data["end"]),
                media=str(data["media"]),
                init=str(data["init"]),
                codecs=str(data["codecs"]),
            )
            mtime = entry.stat().st_mtime
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a description being replaced, or not ours: skip it
        if info.segment not in newest or newest[info.segment][0] < mtime:
            newest[info.segment] = (mtime, info)
    return sorted((info for _, info in newest.values()), key=lambda f: f.start)


def contiguous(found: list[FragmentInfo], *, hole_s: float = HOLE_S) -> list[FragmentInfo]:
    """The fragments from the first up to the first hole."""
    listed: list[FragmentInfo] = []
    for info in found:
        if listed and info.start - listed[-1].end > hole_s:
            break
        listed.append(info)
    return listed


def media_playlist(listed: list[FragmentInfo], *, ended: bool) -> str:
    """The HLS media playlist (fMP4 segments, relative URIs in the live folder)."""
    target = max([DEFAULT_TARGET_S, *(int(-(-(f.end - f.start) // 1)) for f in listed)])
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:EVENT",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    init: str | None = None
    for info in listed:
        if info.init != init:
            if init is not None:
                lines.append("#EXT-X-DISCONTINUITY")
            lines.append(f'#EXT-X-MAP:URI="{info.init}"')
            init = info.init
        lines.append(f"#EXTINF:{info.end - info.start:.3f},")
        lines.append(info.media)
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def master_playlist(listed: list[FragmentInfo], media_uri: str) -> str:
    """The HLS master playlist: one variant, with its codecs (what MSE needs to know)."""
    codecs = listed[0].codecs if listed else "avc1.640028,mp4a.40.2"
    return (
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        f'#EXT-X-STREAM-INF:BANDWIDTH=8000000,CODECS="{codecs}"\n{media_uri}\n'
    )


@dataclass(frozen=True)
class LiveState:
    """What the API needs to answer for a session's live view."""

    listed: list[FragmentInfo]
    ended: bool  # nothing more will be listed


def live_state(settings: Settings, session_id: str) -> LiveState | None:
    """The session's live view now; None for an unknown session."""
    storage = Storage(settings.storage)
    with session_scope(settings.database_url) as db:
        status = db.execute(
            select(models.Session.status).where(models.Session.id == session_id)
        ).scalar_one_or_none()
        if status is None:
            return None
        video = set(
            db.execute(
                select(models.Segment.file).where(
                    models.Segment.session_id == session_id,
                    models.Segment.kind == SegmentKind.VIDEO.value,
                )
            ).scalars()
        )
    listed = contiguous(fragments(storage, session_id))
    recording = status == models.SessionStatus.RECORDING.value
    ended = not recording and video <= {f.segment for f in listed}
    return LiveState(listed=listed, ended=ended)


def served_file(settings: Settings, session_id: str, name: str) -> Path | None:
    """The live folder's file ``name`` if it is one the API serves and it exists."""
    if not SERVED_NAME.match(name):
        return None
    storage = Storage(settings.storage)
    path = storage.path(live_key(storage, session_id)) / name
    return path if path.is_file() else None
