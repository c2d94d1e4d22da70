"""Capture agent configuration (env prefix ``SESSIONPIPE_AGENT_``).

Broker settings are deliberately not here: the agent publishes with the same
``shared.settings.Settings`` (``SESSIONPIPE_BROKER_URL``) the workers consume with.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import Field, PrivateAttr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import get_settings

MACOS_STATE_DIR = Path("~/Library/Application Support/sessionpipe-agent")
S3_SCHEME = "s3://"


def default_state_dir() -> Path:
    """Where the outbox lives: the macOS convention, else ``$SESSIONPIPE_HOME/agent``."""
    if sys.platform == "darwin":
        return MACOS_STATE_DIR.expanduser()
    return get_settings().home / "agent"


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SESSIONPIPE_AGENT_", env_file=None, extra="ignore"
    )

    state_dir: Path | None = Field(default=None, description="Outbox database and lock file.")
    storage: str = Field(default="", description="Destination: a directory, or s3://bucket/prefix.")
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint.")
    s3_region: str | None = Field(default=None, description="S3 region (default from AWS env).")
    bandwidth_limit: int = Field(default=0, ge=0, description="Upload bytes/s; 0 = unlimited.")
    heartbeat_s: float = Field(default=30.0, gt=0)
    keep_shipped_days: float = Field(
        default=30.0, ge=0, description="Days the outbox remembers a fully shipped session."
    )
    delete_after_confirm: bool = Field(
        default=False, description="Delete local segments once the workers wrote a receipt."
    )
    retry_base_s: float = Field(default=1.0, gt=0)
    retry_cap_s: float = Field(default=300.0, gt=0)
    receipt_poll_s: float = Field(default=10.0, gt=0, description="How often to look for receipts.")
    idle_poll_s: float = Field(
        default=0.5, gt=0, description="Outbox re-check interval when idle (other processes add)."
    )

    _storage_explicit: bool = PrivateAttr(default=True)

    @model_validator(mode="after")
    def _fill_defaults(self) -> AgentSettings:
        self._storage_explicit = bool(self.storage)
        if self.state_dir is None:
            self.state_dir = default_state_dir()
        self.state_dir = self.state_dir.expanduser().absolute()
        if not self.storage:
            self.storage = str(get_settings().storage)
        if not self.is_s3:
            self.storage = str(Path(self.storage).expanduser().absolute())
        if self.retry_cap_s < self.retry_base_s:
            raise ValueError("retry_cap_s must be >= retry_base_s")
        return self

    @property
    def is_s3(self) -> bool:
        return self.storage.startswith(S3_SCHEME)

    @property
    def storage_explicit(self) -> bool:
        """False when storage is the shared default folder (which the agent may create)."""
        return self._storage_explicit

    @property
    def outbox_path(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir / "outbox.sqlite3"

    @property
    def lock_path(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir / "uploader.lock"
