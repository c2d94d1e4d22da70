"""Per-session options: which enrichment stages run, in which language, with the LLM or not.

They travel with the session (``session.json``'s ``options``, the ``session.started``
event's payload, the ``sessions.options`` column); a field left out takes the workers'
setting (``SESSIONPIPE_ENRICH``, ``SESSIONPIPE_LANGUAGE``, ``SESSIONPIPE_LLM_PROVIDER``),
so a recorder that knows nothing of enrichment gets the deployment's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: The enrichment stages a session can ask for (``workers.pipeline`` names them the same).
ENRICH_STAGES: Final = ("transcript", "chapters", "summary")
EnrichStage = Literal["transcript", "chapters", "summary"]
#: ISO 639-1 or 639-3 code, lower case ("en", "de", "yue").
LANGUAGE_PATTERN: Final = r"^[a-z]{2,3}$"


class SessionOptions(BaseModel):
    """What a recorder may ask for one session; None means the workers' setting."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    enrich: Annotated[tuple[EnrichStage, ...], Field(max_length=len(ENRICH_STAGES))] | None = None
    language: Annotated[str, Field(pattern=LANGUAGE_PATTERN)] | None = None
    llm: bool | None = None  # use the configured LLM provider (when one is configured)

    def to_json(self) -> dict[str, Any]:
        """Only what was asked for: the column and the events carry no defaults."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_json(cls, data: object) -> SessionOptions:
        """Stored options; anything unreadable (an older or hostile row) counts as none."""
        if not isinstance(data, dict):
            return cls()
        try:
            return cls.model_validate(data)
        except ValidationError:
            return cls()


@dataclass(frozen=True)
class ResolvedOptions:
    """A session's options with every default filled in from the settings."""

    enrich: frozenset[str]
    language: str
    llm: bool

    def runs(self, stage: str) -> bool:
        return stage in self.enrich


def resolve(
    options: SessionOptions, *, enrich: tuple[str, ...], language: str, llm_configured: bool
) -> ResolvedOptions:
    return ResolvedOptions(
        enrich=frozenset(options.enrich if options.enrich is not None else enrich),
        language=options.language or language,
        llm=llm_configured and (options.llm if options.llm is not None else True),
    )


def parse_enrich_list(value: str) -> tuple[EnrichStage, ...]:
    """``"transcript,chapters"`` (or ``"all"``, ``"none"``, ``""``) as stage names."""
    text = value.strip().lower()
    if text in ("", "none"):
        return ()
    if text == "all":
        return ENRICH_STAGES
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ENRICH_STAGES]
    if unknown:
        raise ValueError(
            f"unknown enrichment stage(s) {', '.join(unknown)}: use {', '.join(ENRICH_STAGES)}, "
            "all or none"
        )
    return tuple(dict.fromkeys(names))  # type: ignore[arg-type]
