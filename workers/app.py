"""The one Celery application. Start workers with ``celery -A workers.app worker``."""

from __future__ import annotations

from celery import Celery

from shared.broker import use_bounded_json
from shared.settings import get_settings
from workers.config import celery_config
from workers.cpupriority import CpuPriority
from workers.dispatch import Sweeper

use_bounded_json()  # a message nested too deeply is refused, not fatal to the worker
app = Celery("sessionpipe", include=["workers.tasks"])
app.config_from_object(celery_config(get_settings()))
# Every worker sweeps for jobs the database says must run but no message carries.
app.steps["worker"].add(Sweeper)
# Under contention the kernel serves the queues in the order the user waits for them.
app.steps["worker"].add(CpuPriority)
