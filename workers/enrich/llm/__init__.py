"""The optional provider path: an abstractive summary, keywords and chapter titles from
Claude (Anthropic) or OpenAI, through their official SDKs.

- ``config``: :class:`LlmConfig`, what the stage passes in (from settings);
- ``errors``: :class:`ProviderRateLimited` (delay the job) and :class:`ProviderFailed`
  (keep the offline result);
- ``policy``: which failures are retried, and how long to wait (Retry-After honoured);
- ``providers``: one request through each SDK;
- ``chunks`` and ``prompts``: the session as text that fits a request, and the strict
  reading of the JSON answer;
- ``enrich``: :func:`llm_enrichment`, one request or map/reduce.

The SDKs are imported only when a request is made, so the package loads without them.
"""

from workers.enrich.llm.config import LlmConfig
from workers.enrich.llm.enrich import llm_enrichment
from workers.enrich.llm.errors import ProviderError, ProviderFailed, ProviderRateLimited

__all__ = [
    "LlmConfig",
    "ProviderError",
    "ProviderFailed",
    "ProviderRateLimited",
    "llm_enrichment",
]
