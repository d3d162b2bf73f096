# The MES application image: API server, arq worker and migrations (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The source stays in /app: `mes db upgrade` finds the Alembic migrations next to pyproject.toml.
COPY . .
RUN pip install . \
    && useradd --system --create-home --home-dir /home/mes --uid 10001 --user-group mes

# Owned by root, read-only to the service user.
USER mes

EXPOSE 8000

CMD ["mes", "serve", "--host", "0.0.0.0", "--port", "8000"]
