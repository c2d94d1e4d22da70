"""The live view's audio (workers.media.liveaudio): the recorder's AAC packets copied to
the output timeline, laid out as one gapless run (property-tested), silence that decodes
to silence, and a microphone of another format left out."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.segments import SegmentKind
from synthetic.aac import write_aac
from workers.media.liveaudio import (
    AAC_FRAME_SAMPLES,
    TimedPacket,
    aac_config,
    lay_out,
    recorded_packets,
    silent_frame,
    view_config,
)
from workers.media.timeline import PlacedSegment, Timeline

FRAME = AAC_FRAME_SAMPLES
RATE = 48_000
SILENCE = b"silent"

packets_strategy = st.lists(
    st.builds(
        TimedPacket,
        pts=st.integers(-5 * FRAME, 60 * FRAME),
        duration=st.just(FRAME),
        payload=st.binary(min_size=1, max_size=4),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(packets=packets_strategy, lo=st.integers(0, 10 * FRAME), length=st.integers(0, 50 * FRAME))
def test_a_stretch_is_one_gapless_run_of_its_own_packets(
    packets: list[TimedPacket], lo: int, length: int
) -> None:
    hi = lo + length
    run = lay_out(packets, lo, hi, SILENCE)
    # gapless and in order: each frame starts where the last ended, or less than a frame on
    for before, after in zip(run, run[1:], strict=False):
        assert 0 <= after.pts - (before.pts + before.duration) < FRAME
    if run:
        assert run[0].pts - lo < FRAME
        assert hi - (run[-1].pts + run[-1].duration) < FRAME
    else:
        assert length < FRAME
    # nothing from outside the stretch; every copied packet is one of the stretch's, moved
    # by less than half a frame, in time order
    inside = [p for p in packets if lo <= p.pts < hi]
    copied = [p for p in run if not p.silent]
    assert all(lo <= p.pts < hi + FRAME // 2 for p in copied)
    pool = list(inside)
    for packet in copied:
        match = next(
            q for q in pool if q.payload == packet.payload and 0 <= packet.pts - q.pts < FRAME // 2
        )
        pool.remove(match)
    # a packet left out overlapped one kept by half a frame or more
    for left in pool:
        assert any(abs(left.pts - p.pts) < FRAME for p in copied), left
    assert all(p.payload == SILENCE for p in run if p.silent)


@settings(max_examples=100, deadline=None)
@given(
    first=st.integers(0, 5 * FRAME),
    cuts=st.lists(st.integers(1, 40 * FRAME), max_size=4),
)
def test_neighbouring_stretches_never_share_or_overlap_a_packet(
    first: int, cuts: list[int]
) -> None:
    packets = [TimedPacket(first + i * FRAME, FRAME, bytes([i % 256])) for i in range(45)]
    bounds = sorted({0, *cuts, 50 * FRAME})
    runs = [lay_out(packets, lo, hi, SILENCE) for lo, hi in zip(bounds, bounds[1:], strict=False)]
    joined = [p for run in runs for p in run]
    for before, after in zip(joined, joined[1:], strict=False):
        assert after.pts >= before.pts + before.duration
    assert [p.payload for p in joined if not p.silent] == [p.payload for p in packets]


def test_silence_decodes_to_silence_in_the_configuration_asked() -> None:
    silence = silent_frame(44_100, "mono", 96_000)
    assert silent_frame(44_100, "mono", 96_000) is silence  # encoded once
    context = av.CodecContext.create("aac", "r")
    assert isinstance(context, av.AudioCodecContext)
    context.extradata = silence.extradata
    samples = []
    for _ in range(4):
        for frame in context.decode(av.Packet(silence.frame)):
            assert frame.sample_rate == 44_100 and len(frame.layout.channels) == 1
            samples.append(frame.to_ndarray())
    assert samples and float(np.abs(np.concatenate(samples, axis=1)).max()) < 1e-4


def _mic(path: Path, seconds: float, *, rate: int = RATE, channels: int = 1) -> str:
    tone = np.sin(np.arange(int(seconds * rate)) * (2 * np.pi * 440 / rate)).astype(np.float32)
    write_aac(path, tone * 0.3, rate, channels=channels, bitrate_per_channel=64_000)
    return str(path)


def _placed(path: str, start: float, end: float, *, trim: float = 0.0) -> PlacedSegment:
    return PlacedSegment(SegmentKind.AUDIO, path, start, end, trim, start)


def test_a_segments_packets_land_where_the_timeline_puts_them(tmp_path: Path) -> None:
    mic = _mic(tmp_path / "mic.m4a", 4.0)
    config = aac_config(mic)
    assert config is not None and config.rate == RATE and config.layout == "mono"
    # kept from 0.5 s of the file on (an overlap trimmed), placed at output 10.5 s, with a
    # pause cut out of the recording at 12-13 s
    segment = _placed(mic, 10.5, 14.0, trim=0.5)
    timeline = Timeline(segments=(segment,), cuts=((12.0, 13.0),), duration=3.0, origin=10.0)
    got = recorded_packets(timeline, segment, config, 0.0, 100.0)
    with av.open(mic) as container:
        stream = container.streams.audio[0]
        inside = [(p.pts, bytes(p)) for p in container.demux(stream) if p.pts is not None
                  and p.size and p.pts >= 0]  # fmt: skip
    want = []
    for pts, payload in inside:
        recorded = 10.0 + pts / RATE  # the file starts at recorded 10.0 s (trim 0.5 s)
        if 10.5 <= recorded < 14.0 and not 12.0 <= recorded < 13.0:
            want.append((round(timeline.to_output(recorded) * RATE), payload))
    assert [(p.pts, p.payload) for p in got] == want
    assert 0 <= want[0][0] - round(0.5 * RATE) < FRAME and want[-1][0] < round(3.0 * RATE)
    # only what starts within the stretch asked for
    part = recorded_packets(timeline, segment, config, 1.0, 2.0)
    assert part and all(RATE <= p.pts < 2 * RATE for p in part)


def test_a_segment_of_another_format_is_left_to_silence(tmp_path: Path) -> None:
    first = _mic(tmp_path / "a.m4a", 2.0)
    other = _mic(tmp_path / "b.m4a", 2.0, rate=44_100)
    segments = (_placed(first, 0.0, 2.0), _placed(other, 2.0, 4.0))
    timeline = Timeline(segments=segments, cuts=(), duration=4.0)
    config = view_config(timeline)
    assert config == aac_config(first)
    assert config is not None
    assert recorded_packets(timeline, segments[1], config, 0.0, 4.0) == []
    silence = silent_frame(config.rate, config.layout, 128_000)
    copied = recorded_packets(timeline, segments[0], config, 0.0, 4.0)
    run = lay_out(copied, 0, 4 * RATE, silence.frame)
    assert [p for p in run if not p.silent] == copied
    assert sum(p.silent for p in run) >= 2 * RATE // FRAME - 1


def test_a_microphone_that_is_not_aac_has_no_view_configuration(tmp_path: Path) -> None:
    path = tmp_path / "mic.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 4800), dtype=np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    assert aac_config(str(path)) is None
    segment = _placed(str(path), 0.0, 0.1)
    assert view_config(Timeline(segments=(segment,), cuts=(), duration=0.1)) is None
    assert view_config(Timeline(segments=(), cuts=(), duration=0.0)) is None
