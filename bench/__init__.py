"""Benchmark harness: synthesise a realistic session, time plain ffmpeg against the pipeline."""
