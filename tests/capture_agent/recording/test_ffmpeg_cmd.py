"""The recorder's ffmpeg command lines, checked as data (the Mac one cannot run here)."""

from __future__ import annotations

import pytest

from capture_agent.ffmpeg_cmd import (
    ENCODER_VIDEOTOOLBOX,
    ENCODER_X264,
    AVFoundationSource,
    SegmentListEntry,
    avfoundation_video_device,
    build_record_command,
    choose_video_encoder,
    list_devices_command,
    parse_encoders,
    parse_segment_list,
    segment_name,
    segment_number,
    segment_pattern,
)
from shared.segments import SegmentKind
from synthetic.lavfi import SyntheticSource
from synthetic.voice import speech_aevalsrc_expr


def option(argv: list[str], name: str) -> list[str]:
    """Every value given to option ``name``."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == name]


def mac_command(**kwargs: object) -> list[str]:
    params: dict[str, object] = {
        "segment_seconds": 10.0,
        "video_start": 0,
        "audio_start": 0,
        "run": 1,
        "encoder": ENCODER_VIDEOTOOLBOX,
    }
    params.update(kwargs)
    return build_record_command("ffmpeg", AVFoundationSource(), **params)  # type: ignore[arg-type]


def test_avfoundation_command_line() -> None:
    argv = mac_command()
    i = argv.index("-f")
    assert argv[i : i + 10] == [
        "-f",
        "avfoundation",
        "-capture_cursor",
        "1",
        "-capture_mouse_clicks",
        "1",
        "-framerate",
        "30",
        "-i",
        "Capture screen 0:0",
    ]
    assert option(argv, "-map") == ["0:v:0", "0:a:0"]
    assert option(argv, "-c:v") == [ENCODER_VIDEOTOOLBOX]
    assert option(argv, "-realtime") == ["1"]
    assert option(argv, "-c:a") == ["aac"]
    assert option(argv, "-f")[1:] == ["segment", "segment"]
    assert option(argv, "-segment_time") == ["10", "10"]
    assert option(argv, "-reset_timestamps") == ["1", "1"]
    assert option(argv, "-segment_format") == ["mp4", "mp4"]
    assert (
        option(argv, "-segment_format_options")
        == [
            "movflags=+frag_keyframe+empty_moov+delay_moov+default_base_moof"
            ":frag_duration=1000000:flush_packets=1"
        ]
        * 2
    )
    # Each output keeps the run's clock: the AAC priming stays before 0, declared by the
    # edit list that delay_moov lets the fragmented muxer write.
    assert option(argv, "-avoid_negative_ts") == ["disabled", "disabled"]
    assert option(argv, "-segment_list") == [".screen-run001.csv", ".mic-run001.csv"]
    assert option(argv, "-segment_list_type") == ["csv", "csv"]
    assert option(argv, "-force_key_frames") == ["expr:gte(t,n_forced*10)"]
    assert argv[-1] == "mic-%05d.m4a"
    assert "screen-%05d.mp4" in argv
    assert "-nostdin" in argv and "-t" not in argv
    # The video output's options all come before its file name, the audio's after it.
    video_out = argv.index("screen-%05d.mp4")
    assert argv.index("-c:v") < video_out < argv.index("-c:a")


def test_avfoundation_devices() -> None:
    assert avfoundation_video_device("1") == "Capture screen 1"
    assert avfoundation_video_device("Capture screen 2") == "Capture screen 2"
    argv = build_record_command(
        "ffmpeg",
        AVFoundationSource(screen="2", audio_device="MacBook Pro Microphone", framerate=25),
        segment_seconds=5,
        video_start=0,
        audio_start=0,
        run=1,
        encoder=ENCODER_X264,
    )
    assert option(argv, "-i") == ["Capture screen 2:MacBook Pro Microphone"]
    assert option(argv, "-framerate") == ["25"]
    for bad in ("", "0:1"):
        with pytest.raises(ValueError):
            avfoundation_video_device(bad)


def test_video_only_when_audio_is_none() -> None:
    argv = build_record_command(
        "ffmpeg",
        AVFoundationSource(audio_device=None),
        segment_seconds=5,
        video_start=3,
        audio_start=3,
        run=2,
        encoder=ENCODER_X264,
    )
    assert option(argv, "-i") == ["Capture screen 0:none"]
    assert option(argv, "-map") == ["0:v:0"]
    assert "mic-%05d.m4a" not in argv and "-c:a" not in argv


def test_numbering_continues_and_lists_are_per_run() -> None:
    argv = mac_command(video_start=7, audio_start=9, run=3)
    assert option(argv, "-segment_start_number") == ["7", "9"]
    assert option(argv, "-segment_list") == [".screen-run003.csv", ".mic-run003.csv"]


def test_libx264_elsewhere() -> None:
    argv = mac_command(encoder=ENCODER_X264, segment_seconds=2.5)
    assert option(argv, "-c:v") == [ENCODER_X264]
    assert option(argv, "-tune") == ["zerolatency"]
    assert option(argv, "-g") == ["75"]  # 30 fps x 2.5 s
    assert option(argv, "-force_key_frames") == ["expr:gte(t,n_forced*2.5)"]
    with pytest.raises(ValueError, match="unsupported"):
        mac_command(encoder="h265_magic")


def test_synthetic_differs_only_in_inputs() -> None:
    common = {
        "segment_seconds": 2.0,
        "video_start": 0,
        "audio_start": 0,
        "run": 1,
        "encoder": ENCODER_X264,
    }
    synthetic = build_record_command("ff", SyntheticSource(), **common)  # type: ignore[arg-type]
    mac = build_record_command(
        "ff",
        AVFoundationSource(framerate=SyntheticSource().fps),
        **common,  # type: ignore[arg-type]
    )
    assert option(synthetic, "-f")[:2] == ["lavfi", "lavfi"]
    assert option(synthetic, "-i")[0].startswith("testsrc2=size=640x360:rate=15")
    assert option(synthetic, "-i")[0].endswith(",realtime")
    # the microphone is the speech-like source with the onset marker (synthetic.markers)
    assert option(synthetic, "-i")[1].startswith("aevalsrc=")
    assert speech_aevalsrc_expr() in option(synthetic, "-i")[1]
    assert option(synthetic, "-i")[1].endswith(",arealtime")
    assert option(synthetic, "-map") == ["0:v:0", "1:a:0"]

    def after_inputs(argv: list[str]) -> list[str]:
        """Everything after the inputs, with the stream maps blanked."""
        rest = argv[argv.index("-map") :]
        return ["MAP" if i and rest[i - 1] == "-map" else arg for i, arg in enumerate(rest)]

    assert after_inputs(synthetic) == after_inputs(mac)


def test_duration_limits_both_outputs() -> None:
    argv = build_record_command(
        "ff",
        SyntheticSource(),
        segment_seconds=1,
        video_start=0,
        audio_start=0,
        run=1,
        encoder=ENCODER_X264,
        max_seconds=4.25,
    )
    assert option(argv, "-t") == ["4.250", "4.250"]


def test_encoder_choice() -> None:
    listing = (
        " V....D libx264              libx264 H.264\n"
        " V..... h264_videotoolbox    VideoToolbox H.264 Encoder (codec h264)\n"
        " A....D aac                  AAC (Advanced Audio Coding)\n"
    )
    encoders = parse_encoders(listing)
    assert {"libx264", "h264_videotoolbox", "aac"} <= encoders
    assert choose_video_encoder("darwin", encoders) == ENCODER_VIDEOTOOLBOX
    assert choose_video_encoder("linux", encoders) == ENCODER_X264
    assert choose_video_encoder("darwin", frozenset({"libx264"})) == ENCODER_X264


def test_segment_names_and_lists() -> None:
    assert segment_name(SegmentKind.VIDEO, 3) == "screen-00003.mp4"
    assert segment_name(SegmentKind.AUDIO, 12) == "mic-00012.m4a"
    assert segment_pattern(SegmentKind.VIDEO) == "screen-%05d.mp4"
    assert segment_number(SegmentKind.VIDEO, "screen-00042.mp4") == 42
    assert segment_number(SegmentKind.AUDIO, "screen-00042.mp4") is None
    text = "screen-00000.mp4,0.000000,2.000000\nscreen-00001.mp4,2.000000,4.0000"
    assert parse_segment_list(text) == [SegmentListEntry("screen-00000.mp4", 0.0, 2.0)]
    assert parse_segment_list(text + "00\n")[1] == SegmentListEntry("screen-00001.mp4", 2.0, 4.0)
    assert parse_segment_list("") == []


def test_list_devices_command() -> None:
    assert list_devices_command("ffmpeg") == [
        "ffmpeg",
        "-hide_banner",
        "-f",
        "avfoundation",
        "-list_devices",
        "true",
        "-i",
        "",
    ]
