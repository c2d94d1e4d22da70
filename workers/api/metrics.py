"""``GET /metrics``: the pipeline's state in the Prometheus text format, read at scrape time.

Gauges are read from the database (and the broker) on every scrape, so any number of API
processes report the same values:

- ``sessionpipe_jobs{stage,status}``: job rows per stage and status (one GROUP BY);
- ``sessionpipe_queue_messages{queue}``: messages waiting per broker queue (the embedded
  broker counts every queue under ``all``); ``sessionpipe_broker_readable`` 0 when the
  broker could not be read (then no queue is reported);
- ``sessionpipe_oldest_pending_job_age_seconds``: since the oldest pending job's row was
  created (as ``sessionpipe doctor`` reports it); 0 when none is pending;
- ``sessionpipe_sessions{status}``, ``sessionpipe_sessions_playable`` (merge succeeded) and
  ``sessionpipe_sessions_complete`` (status completed).

``sessionpipe_stage_duration_seconds{stage,status}`` is a real histogram (cumulative, as
Prometheus expects): each scrape observes the jobs that finished (succeeded or failed)
since the previous one, from their ``started_at``/``finished_at``. The first scrape of a
process observes every finished job in the database; a restart starts the counts again,
which Prometheus' ``rate()`` handles as a counter reset. Rows are looked for from
:data:`LATE_COMMIT_S` before the newest finish already seen, and remembered by (id,
finished_at), so a transaction that commits late is counted once and a retried job's new
finish counts again. The histogram is per process: scrape one API process, or sum.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Final

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session as DbSession

from shared import models
from shared.clock import as_utc, utcnow
from shared.db import session_scope
from shared.models import JobStatus
from shared.settings import Settings
from workers.backlog import read_backlog
from workers.pipeline import PLAYABLE_STAGE

PREFIX: Final = "sessionpipe"
#: Stage durations span milliseconds (finalize) to hours (a long talk's transcript).
DURATION_BUCKETS_S: Final = (0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
#: How long before the newest finish already observed a finish may still appear: a job's
#: ``finished_at`` is set before its transaction commits.
LATE_COMMIT_S: Final = 120.0
#: Job statuses whose rows have a duration worth observing (a cancelled job never ran out).
FINISHED_STATUSES: Final = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value)


class PipelineCollector(Collector):
    """The gauges above, read from the database and the broker at every collect."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            f"{PREFIX}_jobs", "Job rows by stage and status.", labels=["stage", "status"]
        )
        sessions = GaugeMetricFamily(
            f"{PREFIX}_sessions", "Sessions by status.", labels=["status"]
        )
        with session_scope(self.settings.database_url) as db:
            for stage, status, count in db.execute(
                select(models.Job.stage, models.Job.status, func.count()).group_by(
                    models.Job.stage, models.Job.status
                )
            ).all():
                jobs.add_metric([stage, status], count)
            by_status: dict[str, int] = {
                status: count
                for status, count in db.execute(
                    select(models.Session.status, func.count()).group_by(models.Session.status)
                ).all()
            }
            for status, count in sorted(by_status.items()):
                sessions.add_metric([status], count)
            playable = _count_playable(db)
            oldest = db.execute(
                select(func.min(models.Job.created_at)).where(
                    models.Job.status == JobStatus.PENDING.value
                )
            ).scalar_one()
        yield jobs
        yield sessions
        yield GaugeMetricFamily(
            f"{PREFIX}_sessions_playable", "Sessions whose playable MP4 exists.", value=playable
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_sessions_complete",
            "Sessions completed (every stage done).",
            value=by_status.get(models.SessionStatus.COMPLETED.value, 0),
        )
        age = (utcnow() - as_utc(oldest)).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily(
            f"{PREFIX}_oldest_pending_job_age_seconds",
            "Seconds since the oldest pending job's row was created; 0 when none is pending.",
            value=max(0.0, age),
        )
        backlog = read_backlog(self.settings)
        queues = GaugeMetricFamily(
            f"{PREFIX}_queue_messages", "Messages waiting on the broker, per queue.",
            labels=["queue"],
        )
        for queue, waiting in sorted(backlog.queues.items()):
            queues.add_metric([queue], waiting)
        yield queues
        yield GaugeMetricFamily(
            f"{PREFIX}_broker_readable",
            "1 when the broker's queues could be read at this scrape, else 0.",
            value=0 if backlog.error else 1,
        )


def _count_playable(db: DbSession) -> int:
    return db.execute(
        select(func.count()).where(
            models.Job.stage == PLAYABLE_STAGE.value,
            models.Job.status == JobStatus.SUCCEEDED.value,
        )
    ).scalar_one()


class StageDurations:
    """The stage duration histogram, fed at each scrape with the jobs finished since the last."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.histogram = Histogram(
            f"{PREFIX}_stage_duration_seconds",
            "Seconds from a job's start to its finish, per stage and outcome.",
            labelnames=["stage", "status"],
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        )
        self._lock = threading.Lock()
        self._newest: datetime | None = None  # the latest finished_at observed
        self._seen: set[tuple[int, datetime]] = set()  # observed within LATE_COMMIT_S of it

    def update(self) -> None:
        with self._lock:
            query = select(
                models.Job.id,
                models.Job.stage,
                models.Job.status,
                models.Job.started_at,
                models.Job.finished_at,
            ).where(
                models.Job.status.in_(FINISHED_STATUSES),
                models.Job.started_at.is_not(None),
                models.Job.finished_at.is_not(None),
            )
            if self._newest is not None:
                since = self._newest - timedelta(seconds=LATE_COMMIT_S)
                query = query.where(models.Job.finished_at >= since)
            with session_scope(self.settings.database_url) as db:
                rows = db.execute(query).all()
            for job_id, stage, status, started_at, finished_at in rows:
                if started_at is None or finished_at is None:  # the query excludes them
                    continue
                finished = as_utc(finished_at)
                key = (job_id, finished)
                if key in self._seen:
                    continue
                self._seen.add(key)
                seconds = (finished - as_utc(started_at)).total_seconds()
                self.histogram.labels(stage=stage, status=status).observe(max(0.0, seconds))
                if self._newest is None or finished > self._newest:
                    self._newest = finished
            if self._newest is not None:
                horizon = self._newest - timedelta(seconds=LATE_COMMIT_S)
                self._seen = {key for key in self._seen if key[1] >= horizon}


class Metrics:
    """One API process's registry: the collector and the duration histogram."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PipelineCollector(settings))
        self.durations = StageDurations(settings, self.registry)

    def scrape(self) -> bytes:
        from prometheus_client import generate_latest

        self.durations.update()
        return generate_latest(self.registry)
