# quantlab live runner: `docker build -t quantlab .` then `docker compose up` (see deploy/README.md).
# Stage 1 installs the package with its `ib` extra into a virtual environment, pinned by requirements.lock; stage 2
# copies only that environment into a slim image that runs as an unprivileged user.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir "uv==0.13.9" && uv venv /opt/venv
WORKDIR /src
COPY settings.ini setup.py README.md requirements.lock ./
COPY quantlab ./quantlab
# the package with its `ib` extra, every version pinned by the lock CI tested
RUN uv pip install --python /opt/venv/bin/python --no-cache --compile-bytecode -c requirements.lock ".[ib]"

FROM python:3.11-slim AS runtime
RUN groupadd --system --gid 10001 quantlab && useradd --system --uid 10001 --gid quantlab --home-dir /home/quantlab --create-home quantlab
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY deploy/live.toml /etc/quantlab/live.toml
ENV QUANTLAB_DATA_DIR=/data PYTHONUNBUFFERED=1
RUN mkdir -p /data && chown quantlab:quantlab /data
VOLUME ["/data"]
USER quantlab
WORKDIR /home/quantlab
EXPOSE 8765
# /health needs no token: 200 while the runner's heartbeat is fresh, 503 when it is missing
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8765/health', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["quantlab", "live", "run"]
CMD ["/etc/quantlab/live.toml"]
