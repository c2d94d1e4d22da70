"""The status API (``sessionpipe api``): sessions, their stages, enrichment and media over HTTP.

A Starlette app (:mod:`workers.api.app`) on the pipeline's own database; it never writes
media, it only serves finished files. Every route but ``/healthz`` needs the bearer token
(:mod:`workers.api.auth`); ``/metrics`` is in the Prometheus text format
(:mod:`workers.api.metrics`).
"""
