"""Pipeline state: sessions, their segments, one job per (session, stage), and received events.

Plus each session's enrichment documents (``enrichment_documents``).

Plus the per-session state of the incremental audio encoder (``audio_chunk_state``).

Plus the search index: each session's *moments* (``search_moments``, ``workers.search``).
Its full-text index is the database's own and is made by the migrations (0009 to 0011),
not described here: an FTS5 table on SQLite, and on both a narrow ``search_index`` table
(with a ``tsvector`` and its GIN index on PostgreSQL) and a lexicon (``search_lexemes``), kept in
step by triggers (:data:`SEARCH_DERIVED_TABLES`, which alembic's comparison of models and
schema leaves out: :func:`described_by_models`).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


#: The search index's backend-specific objects, made and dropped by the migrations only,
#: all derived from ``search_moments`` by triggers: the FTS5 table (and its shadow tables,
#: whose names start with it) on SQLite (0009); on both, the narrow table that matching and
#: ranking read, and the lexicon that prefixes are expanded from (0010; on SQLite, 0011).
SEARCH_FTS_TABLE = "search_moments_fts"
SEARCH_INDEX_TABLE = "search_index"
SEARCH_LEXEMES_TABLE = "search_lexemes"
SEARCH_DERIVED_TABLES = frozenset({SEARCH_INDEX_TABLE, SEARCH_LEXEMES_TABLE})


def described_by_models(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """alembic's ``include_object``: False for the full-text objects the models leave out."""
    if name is None:
        return True
    derived = name.startswith(SEARCH_FTS_TABLE) or name in SEARCH_DERIVED_TABLES
    return not (type_ == "table" and derived)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: A job in one of these never runs again unless an operator resets it (retry/requeue).
TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
#: A job that ended in one of these makes its session failed.
UNSUCCESSFUL_STATUSES = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})


class SessionStatus(enum.StrEnum):
    RECORDING = "recording"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


def _status_column(default: enum.StrEnum) -> Mapped[Any]:
    # Plain strings in the database: readable by operators and easy to extend in migrations.
    return mapped_column(String(16), nullable=False, default=default.value, index=True)


class Session(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(512), nullable=False, default="")
    status: Mapped[str] = _status_column(SessionStatus.RECORDING)
    priority: Mapped[str] = mapped_column(String(8), nullable=False, default="normal")
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expected_segments: Mapped[int | None] = mapped_column(Integer)
    # What the recorder asked for (shared.options.SessionOptions); None: the settings (0004).
    options: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # What a person should know about the session's outputs (a list of sentences: segments
    # that never arrived and were left as a gap, ...) (0008).
    warnings: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )

    segments: Mapped[list[Segment]] = relationship(
        back_populates="session", order_by="Segment.index", cascade="all, delete-orphan"
    )
    jobs: Mapped[list[Job]] = relationship(
        back_populates="session", order_by="Job.id", cascade="all, delete-orphan"
    )


class Segment(Base):
    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("session_id", "file"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    index: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)
    file: Mapped[str] = mapped_column(String(1024), nullable=False)
    storage_key: Mapped[str] = mapped_column(String(2048), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration: Mapped[float | None] = mapped_column(Float)
    # Seconds measured by probing the stored file, remembered so that the stages after the
    # session ends plan without probing every file again (0002).
    probed_duration: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    session: Mapped[Session] = relationship(back_populates="segments")


class Job(Base):
    """One row per (session, stage): the idempotency key for every stage's work."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("session_id", "stage"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    stage: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[str] = _status_column(JobStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    progress: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    task_id: Mapped[str | None] = mapped_column(String(64))
    # The claim token of the execution holding a running job (workers.jobs.claim) (0003).
    owner: Mapped[str | None] = mapped_column(String(64))
    # When the job's latest message is due at a worker; NULL: none known to be out (0003).
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    output_key: Mapped[str | None] = mapped_column(String(2048))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    session: Mapped[Session] = relationship(back_populates="jobs")

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class Event(Base):
    """Every accepted event; (session, seq) is unique so a re-sent event is ignored."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("session_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    session_id: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    schema_version: Mapped[int] = mapped_column(Integer, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    emitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class EnrichmentDocument(Base):
    """A session's transcript, chapters or summary (``workers.enrich.documents``) (0004).

    Written with its stage's success, in the same transaction: present exactly when the
    stage that makes it has succeeded (a later stage may rewrite it, e.g. the summary stage
    adds keywords and model titles to the chapters).
    """

    __tablename__ = "enrichment_documents"
    __table_args__ = (UniqueConstraint("session_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    document: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class WebhookDelivery(Base):
    """One completion webhook of a session: 'playable', 'complete' or 'failed' (0005)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("session_id", "event"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    event: Mapped[str] = mapped_column(String(16), nullable=False)
    idempotency_key: Mapped[str] = mapped_column(String(160), nullable=False, unique=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When its task was last sent; NULL: none known to be out, the sweeper sends it (0006).
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class AudioChunkState(Base):
    """Incremental AAC chunk encoding of one session: a lock and a request counter.

    Ingest bumps ``requested`` for every stored audio segment; a chunk task takes the lock
    (``owner`` + ``lease_until``, by conditional UPDATE), encodes what is settled, and marks
    ``covered`` the request count it has seen. ``closed`` is set by the concat_audio stage:
    from then on only that stage writes chunks.
    """

    __tablename__ = "audio_chunk_state"

    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    requested: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    covered: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    chunks_encoded: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class Part(Base):
    """Work done while its session records, for a stage to use at the end
    (``workers.parts``): per ``kind``, the compressed copy's part of each video segment
    ("compressed"), a transcript piece ("transcript", ``segment_file`` names the piece,
    its transcript in ``result``: ``workers.transcriptparts``), a video segment's chapter
    samples ("scenes": ``workers.chapterparts``).

    One row per (session, kind, segment file): the idempotency key of that work. Every
    transition is a conditional UPDATE; a running part has an owner and a lease it renews.
    """

    __tablename__ = "parts"
    __table_args__ = (UniqueConstraint("session_id", "kind", "segment_file"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    segment_file: Mapped[str] = mapped_column(String(1024), nullable=False)
    # The segment's content the part was made from; a part of other content is not used.
    source_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    output_key: Mapped[str | None] = mapped_column(String(2048))
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class SearchMoment(Base):
    """One searchable moment of a session (``workers.search``) (0009): what was said (a
    transcript segment), shown (the text on screen from one time to another), a chapter's
    title, its keywords, or the summary, with its span on the output timeline.

    Written by the ``index`` stage, all of a session's rows at once (deleted and inserted in
    the transaction that marks the stage succeeded); they go with the session (ON DELETE
    CASCADE, and ``jobs purge`` deletes them explicitly). ``terms`` is ``text`` as the
    index sees it (``workers.search.text.terms``): the full-text index is built from it.
    """

    __tablename__ = "search_moments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    start_s: Mapped[float] = mapped_column(Float, nullable=False)
    end_s: Mapped[float] = mapped_column(Float, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    terms: Mapped[str] = mapped_column(Text, nullable=False)
    # A spoken moment's words and their start times ([[seconds, word], ...]): a hit starts at
    # the word that matched, not at the start of the sentence. NULL for the other kinds.
    words: Mapped[list[Any] | None] = mapped_column(JSON)
