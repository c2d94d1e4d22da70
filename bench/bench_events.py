"""Time from a stage's progress change in the database to the web page showing it.

The path a person watches: a worker writes ``jobs.progress``; the status API's event stream
(``GET /sessions/{id}/events``, ``workers.api.events``) reads the row and sends a
server-sent event; the session page (``/ui/sessions/{id}``) in a real browser (Debian's
chromium, headless) redraws the stage's bar. This bench makes the change itself (an UPDATE
on PostgreSQL, its wall time noted after the commit), and notes when the page's bar shows
the new value (a MutationObserver in the page, on the same machine's clock). As the plain
baseline in the same run it notes when a bare HTTP client reading the same stream gets the
event: the difference is the browser's share; what both share is the stream's polling
(``EVENT_POLL_S``: a change waits on average half of it).

    .venv/bin/python bench/bench_events.py --changes 60     # = make bench-events
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import random
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import update  # noqa: E402

from shared import models  # noqa: E402
from shared.db import session_scope  # noqa: E402
from shared.migrate import upgrade  # noqa: E402
from tests.support.api import running_api  # noqa: E402
from tests.support.browser import chromium, wait_js  # noqa: E402
from tests.support.cli import clean_env  # noqa: E402
from tests.support.services import create_database, drop_database  # noqa: E402
from workers.api.events import EVENT_POLL_S  # noqa: E402

SESSION: Final = "bench-events"
STAGE: Final = "merge"
TOKEN: Final = "bench-" + uuid.uuid4().hex
BROKER_URL: Final = "redis://127.0.0.1:6379/12"  # only read by /healthz here
#: Pause between changes, drawn uniformly, so changes fall anywhere in the poll cycle (s).
PAUSE_S: Final = (0.05, 0.35)
SEEN_TIMEOUT_S: Final = 10.0
#: In the page: note the wall time (ms) whenever the merge bar shows a new progress.
RECORD: Final = """
window.__shown = {};
const note = () => {
  const li = document.querySelector('#stages li[data-stage=merge]');
  if (li && !(li.dataset.progress in window.__shown)) {
    window.__shown[li.dataset.progress] = performance.timeOrigin + performance.now();
  }
};
new MutationObserver(note).observe(document.getElementById('stages'), {childList: true});
"""


def seed(database_url: str) -> None:
    now = datetime.now(UTC)
    with session_scope(database_url) as db:
        db.add(models.Session(id=SESSION, name="events bench", status="ended", created_at=now,
                              started_at=now, ended_at=now))  # fmt: skip
        db.flush()
        db.add(models.Job(session_id=SESSION, stage="concat_audio", status="succeeded",
                          progress=1.0, attempts=1))  # fmt: skip
        db.add(models.Job(session_id=SESSION, stage=STAGE, status="running", progress=0.0,
                          attempts=1))  # fmt: skip


def set_progress(database_url: str, percent: int) -> float:
    """Write the merge job's progress; the wall time (s) right after the commit."""
    with session_scope(database_url) as db:
        db.execute(
            update(models.Job)
            .where(models.Job.session_id == SESSION, models.Job.stage == STAGE)
            .values(progress=percent / 100)
        )
    return time.time()


class StreamReader(threading.Thread):
    """The plain client: reads the event stream, notes when each merge progress arrives."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.seen: dict[int, float] = {}

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port)
        conn.request("GET", f"/sessions/{SESSION}/events",
                     headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        response = conn.getresponse()
        while line := response.readline():
            if line.startswith(b"data: "):
                at = time.time()
                stages = json.loads(line[6:])["stages"]
                progress = next(s["progress"] for s in stages if s["stage"] == STAGE)
                self.seen.setdefault(round(progress * 100), at)


def quantiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]  # noqa: E731
    return pick(0.5), pick(0.95), pick(0.99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=60, help="progress changes to time")
    args = parser.parse_args()
    database_url = create_database()
    try:
        upgrade(database_url)
        seed(database_url)
        with TemporaryDirectory() as tmp:
            home = Path(tmp)
            env = clean_env(
                SESSIONPIPE_HOME=str(home), SESSIONPIPE_DATABASE_URL=database_url,
                SESSIONPIPE_BROKER_URL=BROKER_URL, SESSIONPIPE_STORAGE_ROOT=str(home / "s"),
                SESSIONPIPE_API_TOKEN=TOKEN,
            )  # fmt: skip
            with running_api(env, home / "api.log") as api, chromium() as driver:
                port = int(api.base.rsplit(":", 1)[1])
                driver.get(f"{api.base}/ui/sessions/{SESSION}?token={TOKEN}")
                wait_js(driver, "return window.sessionpipe.events >= 1", 20, "the page")
                driver.execute_script(RECORD)
                plain = StreamReader(port)
                plain.start()
                time.sleep(1.0)  # the plain client's first event is in
                written: dict[int, float] = {}
                for percent in range(1, args.changes + 1):
                    time.sleep(random.uniform(*PAUSE_S))
                    written[percent] = set_progress(database_url, percent)
                    wait_js(driver, f"return window.__shown['{percent}']", SEEN_TIMEOUT_S,
                            f"the page to show {percent} %")  # fmt: skip
                shown: dict[str, float] = driver.execute_script("return window.__shown")
        browser = [shown[str(p)] / 1000 - at for p, at in written.items()]
        raw = [plain.seen[p] - at for p, at in written.items() if p in plain.seen]
    finally:
        drop_database(database_url)
    report(args.changes, browser, raw)


def report(changes: int, browser: list[float], raw: list[float]) -> None:
    poll_ms = EVENT_POLL_S * 1000
    print(f"# progress change in PostgreSQL -> shown, {changes} changes, "
          f"{platform.node()} ({platform.machine()}), event poll {poll_ms:.0f} ms")  # fmt: skip
    print("| | p50 ms | p95 ms | p99 ms | mean ms |")
    print("|---|---|---|---|---|")
    for name, values in (("plain HTTP client on the event stream", raw),
                         ("browser: the session page's bar redrawn", browser)):  # fmt: skip
        p50, p95, p99 = quantiles(values)
        print(f"| {name} | {p50 * 1000:.0f} | {p95 * 1000:.0f} | {p99 * 1000:.0f} | "
              f"{statistics.fmean(values) * 1000:.0f} |")  # fmt: skip
    browser_ms, raw_ms = statistics.median(browser) * 1000, statistics.median(raw) * 1000
    print(f"browser / plain client (median): {browser_ms / raw_ms:.2f}x; "
          f"the browser's own share (median): {browser_ms - raw_ms:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
