# One image for migrations, workers and flower; the command picks the role.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY shared shared
COPY workers workers
COPY capture_agent capture_agent
COPY sessionpipe sessionpipe
COPY synthetic synthetic
COPY migrations migrations
# tesseract reads the text on screen (chapter titles); the enrich extra brings the rest.
RUN apt-get update && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir -c constraints.txt '.[enrich]' && useradd --create-home sessionpipe
USER sessionpipe
CMD ["celery", "-A", "workers.app", "worker", "-Q", "media,audio,enrich,default"]
