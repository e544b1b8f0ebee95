# The coordinator (aidd --serve) with the whole product: the API, the timers, the `aidd` and `alembic` CLIs.
#   docker build -f deploy/coordinator.Dockerfile -t aidd-coordinator .      (from the repository root)
# It needs an external Redis (>= 6.2), PostgreSQL and, with several coordinators, MinIO/S3 (see compose.yaml).
FROM python:3.12-slim
COPY pyproject.toml README.md /src/
COPY aiddwire /src/aiddwire
COPY aiddclient /src/aiddclient
COPY coordinator /src/coordinator
COPY nodeagent /src/nodeagent
COPY console /src/console
COPY themes /src/themes
COPY toolkit /src/toolkit
RUN pip install --no-cache-dir /src && rm -rf /src \
 && useradd --create-home --uid 10001 aidd && mkdir -p /var/lib/aidd && chown aidd /var/lib/aidd
ENV AIDD_HOST=0.0.0.0 \
    AIDD_PORT=8333 \
    AIDD_STATE_DIR=/var/lib/aidd \
    AIDD_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
USER aidd
WORKDIR /var/lib/aidd
EXPOSE 8333
# Configure with the environment: REDIS_URL, DATABASE_URL, MINIO_*, AIDD_API_KEYS, AIDD_AGENT_TOKEN, ...
# `aidd db upgrade` (same image) migrates the schema as a separate step when AIDD_MIGRATE_ON_START=false.
ENTRYPOINT ["aidd"]
CMD ["--serve"]
