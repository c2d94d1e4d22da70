"""The enrichment engine: transcript, chapters, summary and keywords of a finished session.

Like ``workers.media``, no Celery, database or storage here: functions from files and text
to the documents of ``documents.py``. The stages (``workers.stages``) call them.
"""
