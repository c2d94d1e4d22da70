"""All configuration in one place, read from the environment (prefix ``SESSIONPIPE_``).

With nothing set, everything lives under one folder (``./var``): a SQLite database, local
storage and a filesystem broker, so the same code runs on one machine with only Python.
Point ``SESSIONPIPE_DATABASE_URL`` at PostgreSQL and ``SESSIONPIPE_BROKER_URL`` at Redis to
run distributed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_BROKER_SCHEME = "filesystem://"
HEARTBEATS_PER_LEASE = 3  # a lease outlasts this many heartbeats


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SESSIONPIPE_", env_file=None, extra="ignore")

    home: Path = Field(default=Path("var"), description="Folder for every embedded default.")
    database_url: str = Field(default="", description="SQLAlchemy URL; default SQLite in home.")
    broker_url: str = Field(default="", description="Celery broker; default filesystem in home.")
    storage_root: Path | None = Field(default=None, description="Shared storage root.")

    cut_pauses: bool = Field(default=True, description="Cut time where every track stopped.")
    merge_copy_video: bool = Field(
        default=True, description="Copy H.264/HEVC into the playable MP4 when exact."
    )
    compress: bool = Field(default=True, description="Make the compressed copy.")
    compress_preset: Literal["low", "medium", "high"] = "medium"
    keep_originals_days: float | None = Field(
        default=None,
        ge=0,
        description="Delete segments and the full MP4 this long after the compressed copy "
        "exists (`sessionpipe retention apply`); None keeps them.",
    )
    video_fps: float | None = Field(default=None, description="Output frame rate; None = source.")
    video_crf: int = Field(default=23, ge=0, le=51)
    video_preset: str = "veryfast"
    audio_sample_rate: int = Field(default=48_000, gt=0)
    audio_bitrate: int = Field(default=128_000, gt=0)
    audio_aac_coder: Literal["twoloop", "fast"] = Field(
        default="twoloop", description="ffmpeg AAC coder; twoloop is ffmpeg's default."
    )
    audio_incremental: bool = Field(
        default=True, description="Encode audio chunks while the session is still recording."
    )
    audio_chunk_s: float = Field(
        default=20.0, gt=0, le=3600, description="Seconds per independently encoded AAC chunk."
    )
    audio_workers: int = Field(
        default=2, ge=1, le=64, description="Encoder threads when many chunks are left to encode."
    )

    task_max_retries: int = Field(default=5, ge=0)
    job_lease_s: float = Field(
        default=120,
        gt=0,
        description="A running job whose holder has not heartbeaten this long belongs to a "
        "dead worker (or one cut off from the database): the sweeper makes it pending "
        "again and another worker takes it over.",
    )
    job_heartbeat_s: float = Field(
        default=10,
        gt=0,
        description="How often a running stage touches its job row; well under the lease.",
    )
    dispatch_grace_s: float = Field(
        default=30,
        ge=0,
        description="A pending job whose message never left (the broker refused the send, "
        "or the sender died after the commit) is sent by the sweeper after this.",
    )
    redispatch_s: float = Field(
        default=900,
        gt=0,
        description="A pending job whose message was due this long ago yet is unclaimed is "
        "sent again (the message was lost on the broker, or waits behind a backlog: then "
        "the duplicate is dropped by the claim). Longer than a retry's longest countdown.",
    )
    broker_visibility_timeout_s: float = Field(
        default=1800,
        gt=0,
        description="Redis hands a message its worker took and never acknowledged (the "
        "worker died) to another worker after this. Events (not job rows: the sweeper "
        "cannot see them) of a killed worker come back this soon. A task running longer is "
        "delivered again meanwhile, and the claim drops the copy. Longer than a retry's "
        "longest countdown (600 s), which a worker holds unacknowledged.",
    )
    sweep_interval_s: float = Field(
        default=15,
        gt=0,
        description="How often every worker sweeps for stranded jobs (workers.dispatch).",
    )

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        self.home = self.home.expanduser().absolute()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'sessionpipe.db'}"
        if not self.broker_url:
            self.broker_url = EMBEDDED_BROKER_SCHEME
        if self.storage_root is None:
            self.storage_root = self.home / "storage"
        self.storage_root = self.storage_root.expanduser().absolute()
        if self.job_heartbeat_s * HEARTBEATS_PER_LEASE > self.job_lease_s:
            raise ValueError(
                f"job_heartbeat_s ({self.job_heartbeat_s}) must be at most "
                f"1/{HEARTBEATS_PER_LEASE} of job_lease_s ({self.job_lease_s}): a live "
                "worker that misses a heartbeat or two must keep its job"
            )
        return self

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith(EMBEDDED_BROKER_SCHEME)

    @property
    def broker_folder(self) -> Path:
        """Where the filesystem transport keeps its messages (embedded default only)."""
        return self.home / "broker"

    @property
    def storage(self) -> Path:
        assert self.storage_root is not None
        return self.storage_root


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests and CLIs that change the environment)."""
    get_settings.cache_clear()
