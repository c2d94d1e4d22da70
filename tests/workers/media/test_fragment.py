"""The byte surgery on fragmented MP4 (workers.media.fragment), property-tested on
fragments ffmpeg writes, and the live playlists (workers.live)."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.live import FragmentInfo, contiguous, media_playlist
from workers.media.fragment import (
    FRAGMENT_MOVFLAGS,
    FragmentError,
    boxes,
    first_decode_times,
    normalized_init,
    rebase,
    split_fragmented,
    timescales,
)

RATE = 48_000


def _fragmented_audio(path: Path, seconds: float) -> bytes:
    """A fragmented M4A of silence written by ffmpeg (one fragment per ~second)."""
    with av.open(str(path), "w", format="mp4",
                 container_options={"movflags": FRAGMENT_MOVFLAGS,
                                    "frag_duration": "1000000"}) as out:  # fmt: skip
        stream = out.add_stream("aac", rate=RATE, layout="mono")
        for start in range(0, int(seconds * RATE), 1024):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = RATE, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path.read_bytes()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _fragmented_audio(tmp_path_factory.mktemp("frag") / "a.m4a", 3.0)


def test_a_file_splits_into_its_init_and_its_fragments(written: bytes) -> None:
    split = split_fragmented(written)
    assert [b.type for b in boxes(split.init)] == ["ftyp", "moov"]
    kinds = [b.type for b in boxes(split.media)]
    assert kinds[0] == "moof" and set(kinds) == {"moof", "mdat"} and len(kinds) >= 4
    assert timescales(split.init) == {1: RATE}
    assert first_decode_times(split.media) == {1: 0}


@settings(max_examples=50, deadline=None)
@given(offset=st.integers(0, 2**40), first=st.integers(1, 2**31))
def test_rebasing_moves_every_decode_time_and_renumbers(
    written: bytes, offset: int, first: int
) -> None:
    media = split_fragmented(written).media
    before = _tfdts(media)
    moved, count = rebase(media, {1: offset}, first)
    assert count == len(before)
    assert _tfdts(moved) == [t + offset for t in before]
    assert _sequences(moved) == list(range(first, first + count))
    assert len(moved) == len(media)  # fields rewritten in place, nothing else changed
    path = _as_file(split_fragmented(written).init + moved)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            times = [p.pts for p in container.demux(stream) if p.pts is not None]
    finally:
        path.unlink()
    assert times[0] == offset  # a player reads the samples where the rebase put them


def test_a_decode_time_below_zero_or_a_torn_box_is_refused(written: bytes) -> None:
    media = split_fragmented(written).media
    with pytest.raises(FragmentError, match="out of the tfdt range"):
        rebase(media, {1: -1}, 1)
    with pytest.raises(FragmentError, match="past the end"):
        list(boxes(media[:-3]))
    with pytest.raises(FragmentError, match="no fragment"):
        split_fragmented(split_fragmented(written).init)


def test_init_segments_differing_only_in_bitrates_normalise_to_one(
    tmp_path: Path, written: bytes
) -> None:
    other = _fragmented_audio(tmp_path / "b.m4a", 1.0)
    a, b = split_fragmented(written).init, split_fragmented(other).init
    assert normalized_init(a) == normalized_init(b)
    assert normalized_init(normalized_init(a)) == normalized_init(a)


def test_the_playlist_stops_at_a_hole_and_ends_only_when_told() -> None:
    def frag(name: str, start: float, end: float, init: str = "i.init.mp4") -> FragmentInfo:
        return FragmentInfo(name, start, end, f"{name}.m4s", init, "avc1.64001e,mp4a.40.2")

    found = [frag("a", 0, 4), frag("b", 4, 8), frag("d", 12, 16)]  # c is still missing
    listed = contiguous(found)
    assert [f.segment for f in listed] == ["a", "b"]
    text = media_playlist(listed, ended=False)
    assert text.splitlines()[-2:] == ["#EXTINF:4.000,", "b.m4s"]
    assert "#EXT-X-ENDLIST" not in text and text.count("#EXT-X-MAP") == 1
    changed = media_playlist([frag("a", 0, 4), frag("b", 4, 8, "j.init.mp4")], ended=True)
    assert "#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"j.init.mp4\"" in changed
    assert changed.endswith("#EXT-X-ENDLIST\n")


def _as_file(data: bytes) -> Path:
    with tempfile.NamedTemporaryFile(suffix=".mp4", delete=False) as handle:
        handle.write(data)
    return Path(handle.name)


def _tfdts(media: bytes) -> list[int]:
    found = []
    for moof in boxes(media):
        if moof.type == "moof":
            for traf in boxes(media, moof.body, moof.end):
                if traf.type == "traf":
                    for box in boxes(media, traf.body, traf.end):
                        if box.type == "tfdt":
                            wide = media[box.body] == 1
                            found.append(struct.unpack_from(">Q" if wide else ">I", media,
                                                            box.body + 4)[0])  # fmt: skip
    return found


def _sequences(media: bytes) -> list[int]:
    return [
        struct.unpack_from(">I", media, box.body + 4)[0]
        for moof in boxes(media) if moof.type == "moof"
        for box in boxes(media, moof.body, moof.end) if box.type == "mfhd"
    ]  # fmt: skip
