"""Synthetic sessions: the one source of test media for the demo, the tests and the benchmark.

Modules, one concept each:

* :mod:`synthetic.markers` - the audio onset marker and its detector (every user imports them);
* :mod:`synthetic.timecode` - the timecode strip format and its reader;
* :mod:`synthetic.plan` - what a session looks like (durations, microphone holes, segments);
* :mod:`synthetic.screen` - the screen-like picture (numpy);
* :mod:`synthetic.voice` - speech-like audio (numpy, and as an ffmpeg ``aevalsrc`` expression);
* :mod:`synthetic.session` - records a session folder (segments + ``session.json``);
* :mod:`synthetic.lavfi` - ffmpeg lavfi sources: the recorder's ``--synthetic`` input and the
  benchmark's 1080p desktop;
* :mod:`synthetic.ffmpeg_session` - long benchmark sessions generated (and cached) by ffmpeg;
* :mod:`synthetic.clips` - tiny standalone media files for media-engine tests;
* :mod:`synthetic.decode` - decoding files back to samples, frame indices and marker onsets.

It imports neither ``workers`` nor ``capture_agent``.
"""
