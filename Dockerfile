# syntax=docker/dockerfile:1
# The Model Rollback Agent image: `rollback-agent run --config /etc/rollback-agent/agent.yaml`.
#
#   docker build -t rollback-agent:0.1.0 .
#
# Stage 1 installs the package and its dependencies (wheels only; no dev extras) into a virtualenv; stage 2 copies
# that virtualenv onto a clean python:3.11-slim and runs it as uid 10001. No compilers in either stage: every
# dependency ships manylinux wheels for CPython 3.11 (amd64 and arm64).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/rollback-agent
WORKDIR /src
COPY pyproject.toml ./
COPY agent ./agent
COPY model_metrics ./model_metrics
# --only-binary: fail the build rather than compile anything from source. The `fleet` extra brings the PostgreSQL
# driver for the fleet audit store (imported only when audit.fleet is configured).
RUN /opt/rollback-agent/bin/pip install --only-binary=:all: '.[fleet]' \
    && /opt/rollback-agent/bin/rollback-agent --version

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="rollback-agent" \
      org.opencontainers.image.description="Sidecar that moves model traffic back to the last verified-stable version when a new one degrades" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/rollback-agent/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 rollback-agent \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin rollback-agent \
    && mkdir -p /etc/rollback-agent /var/lib/rollback-agent \
    && chown 10001:10001 /var/lib/rollback-agent
COPY --from=build /opt/rollback-agent /opt/rollback-agent
USER 10001:10001
WORKDIR /var/lib/rollback-agent
# xDS (ADS) for Envoy, public HTTP (/healthz /readyz /metrics), control API. Defaults of agent/config.py.
EXPOSE 18000 9090 9091
ENTRYPOINT ["rollback-agent"]
CMD ["run", "--config", "/etc/rollback-agent/agent.yaml"]
