# uplodr: one image for the gateway (`uplodr serve`, the default) and for worker machines
# (`uplodr worker`). See docs/container.md.
#
#   docker build -t uplodr .
#   docker run --rm -e UPLODR_TOKENS=change-me -p 8080:8080 -v uplodr-data:/data uplodr
#
# BASE is any Debian-based image with python3 (3.11+) and its venv module on PATH: the official
# slim Python image by default; the tests build one from Debian packages (debootstrap) because
# no image registry is reachable where they run. Both stages use the same BASE, so the venv's
# interpreter path is the same in both.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
# The pinned uv (the same pin as scripts/ensure-uv).
ARG UV_VERSION=0.13.9
ENV UV_PROJECT_ENVIRONMENT=/opt/uplodr \
    UV_PYTHON=python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# build-ca.pem is optional (the glob lets it be absent): a CA bundle for building behind a
# TLS-intercepting proxy. Only this stage sees it; the runtime image never contains it.
COPY uv.lock build-ca.pem* ./
RUN set -eu; \
    if [ -s build-ca.pem ]; then export PIP_CERT=/src/build-ca.pem SSL_CERT_FILE=/src/build-ca.pem; fi; \
    python3 -m venv /opt/uv; \
    /opt/uv/bin/pip install --quiet "uv==${UV_VERSION}"
# The locked runtime dependencies (every extra, no dev group) first: this layer is reused
# while only the source changes.
COPY pyproject.toml README.md ./
RUN set -eu; \
    if [ -s build-ca.pem ]; then export SSL_CERT_FILE=/src/build-ca.pem; fi; \
    /opt/uv/bin/uv sync --locked --no-dev --all-extras --no-install-project --quiet
COPY src ./src
RUN set -eu; \
    if [ -s build-ca.pem ]; then export SSL_CERT_FILE=/src/build-ca.pem; fi; \
    /opt/uv/bin/uv sync --locked --no-dev --all-extras --no-editable --quiet

FROM ${BASE}
RUN set -eu; \
    groupadd --gid 10001 uplodr; \
    useradd --uid 10001 --gid 10001 --create-home --home-dir /home/uplodr \
      --shell /usr/sbin/nologin uplodr; \
    install -d -o uplodr -g uplodr /data
COPY --from=build /opt/uplodr /opt/uplodr
# glibc malloc with 2 arenas and a fixed mmap threshold: image buffers are mmapped and handed
# back when freed, so a worker's memory stays flat over many jobs; measured against jemalloc
# in docs/benchmarks.md ("Worker memory over many jobs"). MALLOC_ARENA_MAX also keeps the
# worker from re-executing itself to set it.
ENV PATH=/opt/uplodr/bin:$PATH \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=131072 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UPLODR_DATA_DIR=/data \
    UPLODR_HOST=0.0.0.0 \
    UPLODR_PORT=8080
USER uplodr
WORKDIR /home/uplodr
EXPOSE 8080
# The gateway's probe. Workers are probed by their gateway (gRPC Ping); providers start them
# with this health check turned off.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('UPLODR_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["uplodr"]
# serve refuses a non-loopback address without UPLODR_TOKENS: set it (docs/container.md).
CMD ["serve"]
