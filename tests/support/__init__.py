"""Test support shared by every test folder, one module per job.

- ``services``: the shared PostgreSQL and Redis, celery worker subprocesses, and the
  environment a worker process runs in;
- ``servers``: servers of a test's own (Redis, a PostgreSQL cluster) on free ports, which
  fault tests kill and start again on the same port;
- ``cli``: the environment and argv of a ``capture-agent``/``sessionpipe`` subprocess;
- ``waiting``: the one polling helper;
- ``media``: decoding finished files and segments;
- ``shipping``: a raw shipper that sends a session's events on demand.

Fixtures live in the ``conftest.py`` files (those used everywhere in ``tests/conftest.py``).
"""

from __future__ import annotations

from pathlib import Path

#: The checkout's root: the working directory and ``PYTHONPATH`` of every subprocess.
ROOT = Path(__file__).resolve().parents[2]
