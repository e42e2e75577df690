# syntax=docker/dockerfile:1
# Cockpit: one process (`cockpit serve`), non-root, data on /data.
#
#   docker build -t cockpit .
#   docker run -p 8000:8000 -v cockpit-data:/data cockpit          # embedded SQLite
#   docker run --rm -e COCKPIT_DATABASE_URL=... cockpit migrate     # one-shot, PostgreSQL
#
# BASE_IMAGE must provide python3 (3.11+) with the venv module at the same path
# in both stages; where no registry is reachable, build one locally with
# scripts/build_base_image.sh and pass --build-arg BASE_IMAGE=cockpit-base:3.11.
ARG BASE_IMAGE=python:3.11-slim

# --------------------------------------------------------------------------- build
FROM ${BASE_IMAGE} AS build
# Build-stage only (never in the runtime image): a package index mirror, and the
# PEM of extra CA certificates pip must trust (a TLS-intercepting egress proxy):
#   --build-arg PIP_EXTRA_CA="$(cat /usr/local/share/ca-certificates/*.crt)"
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_EXTRA_CA=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/cockpit \
 && if [ -n "$PIP_EXTRA_CA" ]; then \
        cat /etc/ssl/certs/ca-certificates.crt > /opt/pip-ca.pem 2>/dev/null || true; \
        printf '%s\n' "$PIP_EXTRA_CA" >> /opt/pip-ca.pem; \
        printf '[global]\ncert = /opt/pip-ca.pem\n' > /opt/cockpit/pip.conf; \
    fi
WORKDIR /src
# Dependencies first, from the metadata alone (a stub package), so a source-only
# change rebuilds in seconds.
COPY pyproject.toml README.md ./
RUN mkdir cockpit && touch cockpit/__init__.py \
 && /opt/cockpit/bin/pip install --upgrade pip setuptools wheel \
 && /opt/cockpit/bin/pip install . \
 && /opt/cockpit/bin/pip uninstall -y cockpit \
 && rm -rf cockpit build
COPY cockpit ./cockpit
RUN /opt/cockpit/bin/pip install --no-deps --no-build-isolation . \
 && /opt/cockpit/bin/pip uninstall -y pip setuptools wheel \
 && rm -f /opt/cockpit/pip.conf \
 && find /opt/cockpit -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/cockpit/bin/python -m compileall -q -j 0 /opt/cockpit/lib \
 && /opt/cockpit/bin/python -c "import cockpit.cli, cockpit.bootstrap"

# Bytecode is compiled above, in the image: the runtime user cannot write to
# /opt/cockpit, and without it every start would recompile (seconds per container).

# --------------------------------------------------------------------------- runtime
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="cockpit" \
      org.opencontainers.image.description="Command-and-control plane for fleets of autonomous AI agents" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN (getent group 10001 >/dev/null || groupadd --system --gid 10001 cockpit) \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin cockpit \
 && mkdir -p /data && chown 10001:10001 /data && chmod 0750 /data
COPY --from=build /opt/cockpit /opt/cockpit
ENV PATH=/opt/cockpit/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    COCKPIT_DATA_DIR=/data \
    COCKPIT_GATEWAY__HOST=0.0.0.0 \
    COCKPIT_GATEWAY__PORT=8000 \
    COCKPIT_LOG_JSON=true
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
# 200 only when every required dependency answers (the payload of GET /health).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('COCKPIT_GATEWAY__PORT', '8000'), timeout=4)"]
ENTRYPOINT ["cockpit"]
CMD ["serve"]
