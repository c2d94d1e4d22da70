"""probe(): stream facts and a duration that survives truncated uploads."""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from synthetic.clips import truncate, write_random_bytes
from workers.media import MediaError, probe


def test_probe_audio_and_video(media: Callable[..., Path]) -> None:
    m4a = probe(media("tone", "p44.m4a", seconds=2.0, rate=44100, channels=1))
    assert (m4a.has_audio, m4a.has_video, m4a.audio_codec) == (True, False, "aac")
    assert (m4a.sample_rate, m4a.channels) == (44100, 1)
    assert m4a.duration == pytest.approx(2.0, abs=0.03)

    wav = probe(media("tone", "p48.wav", seconds=1.5, rate=48000, channels=2, codec="pcm_s16le"))
    assert (wav.audio_codec, wav.sample_rate, wav.channels) == ("pcm_s16le", 48000, 2)
    assert wav.duration == pytest.approx(1.5, abs=0.01)

    mp4 = probe(media("video", "p.mp4", seconds=5.0, fps=10))  # > 3 s: exercises the tail seek
    assert (mp4.has_video, mp4.has_audio, mp4.video_codec) == (True, False, "h264")
    assert (mp4.width, mp4.height, mp4.fps) == (160, 120, 10.0)
    assert mp4.duration == pytest.approx(5.0, abs=0.11)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="nope.mp4") as info:
        probe(tmp_path / "nope.mp4")
    assert info.value.path is not None and info.value.path.endswith("nope.mp4")


def test_random_bytes(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="noise.mp4"):
        probe(write_random_bytes(tmp_path / "noise.mp4"))


@pytest.mark.parametrize("name", ["t.m4a", "t.mp4"])
def test_truncated_file(media: Callable[..., Path], tmp_path: Path, name: str) -> None:
    source = (
        media("tone", "pt.m4a", seconds=2.0)
        if name.endswith("m4a")
        else media("video", "pt.mp4", seconds=2.0)
    )
    broken = truncate(Path(shutil.copy(source, tmp_path / name)))
    with pytest.raises(MediaError, match=name):
        probe(broken)


def test_truncated_fast_start_file_is_detected(media: Callable[..., Path], tmp_path: Path) -> None:
    """moov at the front keeps the full duration in the header; the packets tell the truth."""
    fast = media("video", "fast.mp4", seconds=6.0, fps=10, faststart=True)
    assert probe(fast).duration == pytest.approx(6.0, abs=0.11)
    broken = truncate(Path(shutil.copy(fast, tmp_path / "fast.mp4")), 0.5)
    with pytest.raises(MediaError, match="fast.mp4"):
        probe(broken)


def test_url_is_refused() -> None:
    with pytest.raises(MediaError, match="http://example.com/a.mp4"):
        probe("http://example.com/a.mp4")  # type: ignore[arg-type]


# -- hostile inputs: a "segment" that is really a playlist ----------------------------------


def _age_atime(path: Path) -> None:
    """Set ``path``'s access time far in the past: any read of it moves it (relatime too)."""
    os.utime(path, (1_000_000.0, path.stat().st_mtime))


def _atime_is_tracked(directory: Path) -> bool:
    """Whether reading a file here updates its atime (not on a noatime mount)."""
    control = directory / "control.bin"
    control.write_bytes(b"x" * 64)
    _age_atime(control)
    control.read_bytes()
    return control.stat().st_atime > 1_000_000.0


def _playlists(referenced: Path) -> dict[str, str]:
    """Playlist texts, by the segment name they are saved under, that list ``referenced``."""
    hls = "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1.0,\n{}\n#EXT-X-ENDLIST\n"
    return {
        "hls-absolute.mp4": hls.format(referenced),
        "hls-relative.m4a": hls.format(referenced.name),
        "hls-passwd.mp4": hls.format("/etc/passwd"),
        "hls-url.mp4": hls.format("http://127.0.0.1:9/segment.ts"),
        "hls-named.m3u8": hls.format(referenced.name),  # the extension FFmpeg's hls probe wants
        "hls-bom.mp4": "\ufeff  " + hls.format(referenced.name),
        "ffconcat-absolute.mp4": f"ffconcat version 1.0\nfile {referenced}\n",
        "ffconcat-relative.m4a": f"ffconcat version 1.0\nfile {referenced.name}\n",
        "ffconcat-passwd.m4a": "ffconcat version 1.0\nfile /etc/passwd\n",
        "dash.mp4": f'<?xml version="1.0"?>\n<MPD><BaseURL>{referenced}</BaseURL></MPD>\n',
    }


PLAYLIST_NAMES = list(_playlists(Path("/x/secret.m4a")))


@pytest.mark.parametrize("name", PLAYLIST_NAMES)
def test_a_playlist_posing_as_a_segment_fails_naming_it_and_opens_nothing(
    media: Callable[..., Path], tmp_path: Path, name: str
) -> None:
    secret = Path(shutil.copy(media("tone", "secret.m4a", seconds=1.0), tmp_path / "secret.m4a"))
    segment = tmp_path / name
    segment.write_text(_playlists(secret)[name], encoding="utf-8")
    _age_atime(secret)
    with pytest.raises(MediaError, match=r"is an? [^/]*, not a media file") as info:
        probe(segment)
    assert name in str(info.value)
    if _atime_is_tracked(tmp_path):
        assert secret.stat().st_atime == 1_000_000.0, "the listed file was opened"


def test_the_demuxer_whitelist_alone_stops_a_playlist(
    media: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the signature check (a playlist it does not know), FFmpeg's whitelist holds."""
    probe_module = importlib.import_module("workers.media.probe")  # the package hides it
    secret = Path(shutil.copy(media("tone", "secret.m4a", seconds=1.0), tmp_path / "secret.m4a"))
    segment = tmp_path / "sneaky.m4a"
    segment.write_text(f"ffconcat version 1.0\nfile {secret.name}\n")
    monkeypatch.setattr(probe_module, "playlist_kind", lambda path: None)
    _age_atime(secret)
    with pytest.raises(MediaError, match="sneaky.m4a.*not a media container"):
        probe(segment)
    if _atime_is_tracked(tmp_path):
        assert secret.stat().st_atime == 1_000_000.0, "the listed file was opened"


def test_every_container_the_pipeline_makes_is_still_read(media: Callable[..., Path]) -> None:
    """The whitelist keeps what the recorder and the tests write: mp4, m4a, wav, ogg."""
    for path in (
        media("tone", "w.m4a", seconds=1.0),
        media("tone", "w.wav", seconds=1.0, codec="pcm_s16le"),
        media("tone", "w.ogg", seconds=1.0, rate=48000, codec="libopus"),
        media("video", "w.mp4", seconds=1.0),
    ):
        assert probe(path).duration == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize(
    "name", ["pipe:0", "file:/etc/passwd", "concat:/etc/passwd|/etc/hosts", "data:,abc"]
)
def test_protocol_names_are_opened_as_plain_files(tmp_path: Path, name: str) -> None:
    """``name:rest`` is never a protocol: the path is a file under the working folder."""
    with pytest.raises(MediaError, match="file not found"):
        probe(tmp_path / name)
