"""The ``index`` stage: a session's moments into the search index (``workers.search``).

Runs after the summary, so after everything it indexes (the transcript, the chapters with
their screen text, titles and keywords, the summary); any of them may be missing (skipped
or failed), and what there is gets indexed. Reads the enrichment documents as stored (the
summary stage rewrites the chapters with their keywords) and returns the moments; the
runner writes them in place of the session's previous ones in the transaction that marks
this stage succeeded, so running it twice leaves the same rows. Pure work, no media:
milliseconds for a 30-minute session (bench/bench_search.py). Runs again when enrichment
is re-run (``workers.pipeline``: ``refresh_after``).
"""

from __future__ import annotations

from collections import Counter

from shared.options import ENRICH_STAGES
from workers.enrichment import KIND_CHAPTERS, KIND_SUMMARY, KIND_TRANSCRIPT
from workers.search.moments import build_moments
from workers.stages.context import NOT_ASKED, StageContext, StageOutput

STAGE = "index"
NOTHING_TO_INDEX = "nothing to index: no transcript, chapters or summary"


def _nothing(reason: str) -> StageOutput:
    """Skipped, and whatever was indexed before goes (the documents it came from did)."""
    out = StageOutput.skipped(reason)
    out.moments = []
    return out


def build_index(ctx: StageContext) -> StageOutput:
    if not any(ctx.options.runs(stage) for stage in ENRICH_STAGES):
        return _nothing(NOT_ASKED)  # no enrichment asked for: nothing to search
    documents = ctx.documents
    duration = ctx.results.get("merge", {}).get("duration")
    moments = build_moments(
        transcript=dict(documents.get(KIND_TRANSCRIPT, {})),
        chapters=dict(documents.get(KIND_CHAPTERS, {})),
        summary=dict(documents.get(KIND_SUMMARY, {})),
        duration=float(duration) if isinstance(duration, int | float) else None,
    )
    ctx.progress(1.0)
    if not moments:
        return _nothing(NOTHING_TO_INDEX)
    kinds = Counter(m.kind for m in moments)
    return StageOutput(
        output_key=None,
        result={"moments": len(moments), "kinds": dict(sorted(kinds.items()))},
        moments=moments,
    )
