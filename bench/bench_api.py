"""The status API's latency: ``GET /sessions/{id}`` and ``GET /sessions`` over 10,000 jobs.

A fresh PostgreSQL database on 127.0.0.1:5432 (migrated to head, dropped afterwards) is
seeded with N sessions (default 1,250) x the 8 stages = 10,000 job rows, in realistic
states: most completed (some enrichment skipped), some failed with an error, some processing
(a stage running at some progress, the rest pending), a few still recording; each with
its segments (a 30-minute session in 30 s video and 15 s audio segments has 180 of them),
results and output keys as the stages write them. Then the real ``sessionpipe api``
(uvicorn, a bearer token set) is started in a subprocess and asked, over one keep-alive
connection, for R random sessions (default 2,000) and for the first page of the session
list, after a warm-up that is not counted.

**The baseline**, in the same run: the plain reads a person would write for the same
answers, through one psycopg connection to the same database: one SQL query per session
(the session, its jobs, its segment count) and two per page (the page of sessions, their
jobs). Each row prints p50/p95/p99 and the ratio to its baseline; the target is p99 under
10 ms for ``GET /sessions/{id}`` on this machine (the original design asked for 100 ms).

    .venv/bin/python bench/bench_api.py                  # = make bench-api
    .venv/bin/python bench/bench_api.py --sessions 5 --requests 20   # a smoke run
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from shared.migrate import upgrade  # noqa: E402
from shared.storage import Storage  # noqa: E402
from tests.faults.loadgen import percentile  # noqa: E402
from tests.support.api import running_api  # noqa: E402
from tests.support.cli import clean_env  # noqa: E402
from tests.support.services import create_database, drop_database  # noqa: E402
from workers.pipeline import STAGES, Stage  # noqa: E402

DEFAULT_SESSIONS: Final = 1250  # x 8 stages = 10,000 jobs
DEFAULT_REQUESTS: Final = 2000
DEFAULT_LIST_REQUESTS: Final = 500
WARMUP_REQUESTS: Final = 200
TARGET_P99_MS: Final = 10.0
DESIGN_P99_MS: Final = 100.0
SEED: Final = 20261201
#: Segments per session: 30 s video + 15 s audio segments of sessions 5 to 60 minutes long.
VIDEO_SEGMENT_S: Final = 30
AUDIO_SEGMENT_S: Final = 15
SESSION_MINUTES: Final = (5, 60)
SEGMENT_BYTES: Final = (200_000, 30_000_000)
#: The share of sessions in each state (the rest: completed).
FAILED_SHARE: Final = 0.06
PROCESSING_SHARE: Final = 0.07
RECORDING_SHARE: Final = 0.02
SKIPPED_ENRICHMENT_SHARE: Final = 0.1
API_START_TIMEOUT_S: Final = 30.0
API_STOP_TIMEOUT_S: Final = 10.0
REQUEST_TIMEOUT_S: Final = 10.0
T0: Final = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
NS_PER_MS: Final = 1_000_000
PERCENTILES: Final = (50, 95, 99)

#: The plain read of one session: the session, its jobs and its segment count, one query.
PLAIN_SESSION_SQL: Final = """
SELECT s.id, s.name, s.status, s.priority, s.started_at, s.ended_at, s.expected_segments,
       (SELECT count(*) FROM segments g WHERE g.session_id = s.id) AS segments,
       j.stage, j.status, j.attempts, j.progress, j.error, j.started_at, j.finished_at,
       j.output_key, j.result
FROM sessions s LEFT JOIN jobs j ON j.session_id = s.id
WHERE s.id = %s
"""
PLAIN_PAGE_SQL: Final = """
SELECT id, name, status, priority, created_at, started_at, ended_at FROM sessions
ORDER BY created_at DESC, id DESC LIMIT %s
"""
PLAIN_PAGE_JOBS_SQL: Final = (
    "SELECT session_id, stage, status, result FROM jobs WHERE session_id = ANY(%s)"
)
PAGE_SIZE: Final = 50  # the API's default page


@dataclass(frozen=True)
class Latency:
    label: str
    requests: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, label: str, samples_ns: list[int]) -> Latency:
        ms = [s / NS_PER_MS for s in samples_ns]
        p50, p95, p99 = (percentile(ms, q) for q in PERCENTILES)
        return cls(label, len(ms), p50, p95, p99, max(ms))


# -- seeding ----------------------------------------------------------------------------------
def _result(stage: Stage, minutes: float, rng: random.Random) -> dict[str, Any]:
    duration = round(minutes * 60, 3)
    results: dict[Stage, dict[str, Any]] = {
        Stage.CONCAT_AUDIO: {"duration": duration, "chunks": int(minutes * 3), "reused": 2},
        Stage.MERGE: {"duration": duration, "video_copied": True, "video_codec": "h264"},
        Stage.COMPRESS: {"preset": "medium", "frames_in": int(duration * 30),
                         "frames_out": int(duration * 5), "ratio": round(rng.random() / 10, 4)},
        Stage.FINALIZE: {"playable": True, "compressed": True},
        Stage.TRANSCRIPT: {"language": "en", "segments": int(minutes * 14),
                           "words": int(minutes * 140)},
        Stage.CHAPTERS: {"chapters": rng.randint(1, 12), "ocr": True},
        Stage.SUMMARY: {"keywords": 10, "sentences": 3, "provider": "offline"},
        Stage.INDEX: {"moments": int(minutes * 17), "kinds": {"spoken": int(minutes * 14)}},
    }  # fmt: skip
    return results.get(stage, {})


def seed(database_url: str, storage: Storage, sessions: int, rng: random.Random) -> list[str]:
    """``sessions`` sessions with their jobs and segments (COPY); returns their ids."""
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    ids: list[str] = []
    session_rows: list[tuple[Any, ...]] = []
    job_rows: list[tuple[Any, ...]] = []
    segment_rows: list[tuple[Any, ...]] = []
    stages = list(STAGES)
    for n in range(sessions):
        sid = f"bench-{n:05d}-{uuid.UUID(int=rng.getrandbits(128)).hex[:8]}"
        ids.append(sid)
        minutes = rng.uniform(*SESSION_MINUTES)
        created = T0 + timedelta(minutes=n * 7)
        ended = created + timedelta(minutes=minutes)
        roll = rng.random()
        if roll < RECORDING_SHARE:
            state, cut = "recording", 0
        elif roll < RECORDING_SHARE + PROCESSING_SHARE:
            state, cut = "processing", rng.randrange(len(stages))
        elif roll < RECORDING_SHARE + PROCESSING_SHARE + FAILED_SHARE:
            state, cut = "failed", rng.randrange(len(stages))
        else:
            state, cut = "completed", len(stages)
        video = int(minutes * 60 / VIDEO_SEGMENT_S) + 1
        audio = int(minutes * 60 / AUDIO_SEGMENT_S) + 1
        session_rows.append((
            sid, f"Session {n}", state, rng.choice(("high", "normal", "normal", "low")),
            created, None if state == "recording" else ended, video + audio,
            json.dumps({"enrich": ["transcript", "chapters", "summary"], "language": "en"}),
            created, ended,
        ))  # fmt: skip
        skip_enrichment = rng.random() < SKIPPED_ENRICHMENT_SHARE
        for i, stage in enumerate(stages):
            started = ended + timedelta(seconds=i * 20)
            finished = started + timedelta(seconds=rng.uniform(1, 120))
            output = {
                Stage.CONCAT_AUDIO: f"{sid}.m4a", Stage.MERGE: f"{sid}.mp4",
                Stage.COMPRESS: f"{sid}-compressed.mp4",
            }.get(stage)  # fmt: skip
            key = storage.derived_key(sid, output) if output else None
            result: dict[str, Any] | None = _result(stage, minutes, rng)
            if skip_enrichment and stage in (
                Stage.TRANSCRIPT, Stage.CHAPTERS, Stage.SUMMARY, Stage.INDEX
            ):  # fmt: skip
                result, key = {"skipped": "not asked for"}, None
            row: tuple[str, int, float, str | None, datetime | None, datetime | None,
                       str | None, dict[str, Any] | None]
            if i < cut:
                row = ("succeeded", 1, 1.0, None, started, finished, key, result)
            elif i == cut and state == "failed":
                error = (f"{stage.value}: ffmpeg exited 1: [mov,mp4] moov atom not found in "
                         f"sessions/{sid}/segments/screen-{rng.randrange(video):04d}.mp4")
                row = ("failed", 3, rng.random(), error, started, finished, None, None)
            elif i == cut and state in ("processing", "recording"):
                row = ("running", 1, rng.random(), None, started, None, None, None)
            else:
                row = ("pending", 0, 0.0, None, None, None, None, None)
            status, attempts, progress, error_text, st, fin, out_key, res = row
            job_rows.append((
                sid, stage.value, status, attempts, progress, error_text, out_key,
                None if res is None else json.dumps(res), created, fin or created, st, fin,
            ))  # fmt: skip
        for index in range(video + audio):
            kind, k = ("video", index) if index < video else ("audio", index - video)
            name = f"screen-{k:04d}.mp4" if kind == "video" else f"mic-{k:04d}.m4a"
            seconds = VIDEO_SEGMENT_S if kind == "video" else AUDIO_SEGMENT_S
            segment_rows.append((
                sid, index, kind, name, f"sessions/{sid}/segments/{name}",
                f"{rng.getrandbits(256):064x}", rng.randint(*SEGMENT_BYTES),
                created + timedelta(seconds=k * seconds), float(seconds), float(seconds), created,
            ))  # fmt: skip
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        for table, columns, rows in (
            ("sessions", "id, name, status, priority, started_at, ended_at, expected_segments, "
             "options, created_at, updated_at", session_rows),
            ("jobs", "session_id, stage, status, attempts, progress, error, output_key, result, "
             "created_at, updated_at, started_at, finished_at", job_rows),
            ("segments", 'session_id, "index", kind, file, storage_key, sha256, size, '
             "started_at, duration, probed_duration, created_at", segment_rows),
        ):  # fmt: skip
            with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
        cur.execute("ANALYZE")
    print(f"seeded {len(session_rows)} sessions, {len(job_rows)} jobs, "
          f"{len(segment_rows)} segments")  # fmt: skip
    return ids


# -- measuring --------------------------------------------------------------------------------
@contextmanager
def api_server(database_url: str, home: Path, token: str) -> Iterator[int]:
    """``sessionpipe api`` on a free port of 127.0.0.1, until the block ends; yields the port."""
    env = clean_env(
        SESSIONPIPE_HOME=str(home),
        SESSIONPIPE_DATABASE_URL=database_url,
        SESSIONPIPE_STORAGE_ROOT=str(home / "storage"),
        SESSIONPIPE_API_TOKEN=token,
    )
    with running_api(env, home / "api.log") as api:
        yield int(api.base.rsplit(":", 1)[1])


def time_http(port: int, token: str, paths: list[str]) -> list[int]:
    """Nanoseconds per GET over one keep-alive connection (request sent to body read)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    headers = {"Authorization": f"Bearer {token}"}
    samples: list[int] = []
    for path in paths:
        start = time.perf_counter_ns()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        samples.append(time.perf_counter_ns() - start)
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
    conn.close()
    return samples


def time_sql(dsn: str, work: Callable[[psycopg.Cursor[Any], int], None], count: int) -> list[int]:
    """Nanoseconds per ``work(cursor, i)`` on one connection (autocommit, as the API reads)."""
    samples: list[int] = []
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        for i in range(count):
            start = time.perf_counter_ns()
            work(cur, i)
            samples.append(time.perf_counter_ns() - start)
    return samples


def machine() -> str:
    with psycopg.connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    ) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} CPUs, Python {platform.python_version()}, PostgreSQL "
            f"{row[0] if row else '?'}, load [{load}]")  # fmt: skip


def run(sessions: int, requests: int, list_requests: int) -> dict[str, Any]:
    rng = random.Random(SEED)
    token = uuid.uuid4().hex
    url = create_database()
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    try:
        upgrade(url)
        with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
            home = Path(tmp)
            ids = seed(url, Storage(home / "storage"), sessions, rng)
            warm = [rng.choice(ids) for _ in range(min(WARMUP_REQUESTS, requests))]
            picks = [rng.choice(ids) for _ in range(requests)]
            with api_server(url, home, token) as port:
                time_http(port, token, [f"/sessions/{sid}" for sid in warm] + ["/sessions"] * 20)
                one = time_http(port, token, [f"/sessions/{sid}" for sid in picks])
                page = time_http(port, token, ["/sessions"] * list_requests)

        def plain_one(cur: psycopg.Cursor[Any], i: int) -> None:
            cur.execute(PLAIN_SESSION_SQL, (picks[i],))
            cur.fetchall()

        def plain_page(cur: psycopg.Cursor[Any], i: int) -> None:
            cur.execute(PLAIN_PAGE_SQL, (PAGE_SIZE + 1,))
            page_ids = [row[0] for row in cur.fetchall()]
            cur.execute(PLAIN_PAGE_JOBS_SQL, (page_ids,))
            cur.fetchall()

        time_sql(dsn, lambda cur, i: plain_one(cur, i % len(picks)), len(warm))
        plain_one_ns = time_sql(dsn, plain_one, requests)
        plain_page_ns = time_sql(dsn, plain_page, list_requests)
    finally:
        drop_database(url)
    rows = [
        Latency.of("API: GET /sessions/{id}", one),
        Latency.of("plain: one SQL query (session, jobs, segment count)", plain_one_ns),
        Latency.of(f"API: GET /sessions (first page of {PAGE_SIZE})", page),
        Latency.of("plain: two SQL queries (page, its jobs)", plain_page_ns),
    ]
    return {"sessions": sessions, "jobs": sessions * len(STAGES), "rows": rows}


def report(result: dict[str, Any], elapsed_s: float) -> None:
    rows: list[Latency] = result["rows"]
    print(f"{result['sessions']} sessions, {result['jobs']} jobs; {machine()}; "
          f"{datetime.now(UTC):%Y-%m-%d}; {elapsed_s:.0f} s in all")  # fmt: skip
    print(f"  {'':<54} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for row in rows:
        print(f"  {row.label:<54} {row.requests:>5} {row.p50_ms:>8.2f} {row.p95_ms:>8.2f} "
              f"{row.p99_ms:>8.2f} {row.max_ms:>8.2f}")  # fmt: skip
    for api, plain in ((rows[0], rows[1]), (rows[2], rows[3])):
        print(f"  {api.label}: {api.p50_ms / plain.p50_ms:.1f}x the plain read at p50, "
              f"{api.p99_ms / plain.p99_ms:.1f}x at p99")  # fmt: skip
    p99 = rows[0].p99_ms
    verdict = "met" if p99 < TARGET_P99_MS else "MISSED"
    print(f"  target: GET /sessions/{{id}} p99 < {TARGET_P99_MS:g} ms: {p99:.2f} ms, {verdict} "
          f"(design: < {DESIGN_P99_MS:g} ms)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS)
    p.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    p.add_argument("--list-requests", type=int, default=DEFAULT_LIST_REQUESTS)
    p.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")
    args = p.parse_args(argv)
    start = time.monotonic()
    result = run(args.sessions, args.requests, args.list_requests)
    report(result, time.monotonic() - start)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {**result, "rows": [asdict(r) for r in result["rows"]]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
