# CDS Hooks 2.0 osteoporosis-escalation service.
#   docker build -t cds-service .
#   docker run -p 8000:8000 -v cds-data:/var/lib/cds-service cds-service
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 cds \
 && useradd --system --uid 10001 --gid cds --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin cds

WORKDIR /src
# README.m[d] is optional: the wildcard copies it when present.
COPY pyproject.toml README.m[d] ./
COPY requirements/runtime.lock ./requirements/runtime.lock
COPY cds_service ./cds_service
# The locked versions (requirements/runtime.lock), then the package without resolving again.
RUN pip install -r requirements/runtime.lock && pip install --no-deps . && rm -rf /src/build

# matplotlib (the SMART app's charts) builds its font list on first use, about a second per worker, and
# needs a writable directory for it. Build it now, into MPLCONFIGDIR; the service reads it from there
# when the directory is writable (docker run) and copies it to CDS_DATA_DIR when the root filesystem is
# read-only (the Helm chart): cds_service/mpl_cache.py. tests/deploy/test_matplotlib_cache.py checks this.
ENV MPLCONFIGDIR=/opt/cds-service/matplotlib
RUN mkdir -p "$MPLCONFIGDIR" \
 && python -c "import matplotlib.font_manager" \
 && ls "$MPLCONFIGDIR"/fontlist-*.json \
 && chown -R 10001:10001 "$MPLCONFIGDIR"

ENV CDS_DATA_DIR=/var/lib/cds-service
RUN mkdir -p /var/lib/cds-service && chown 10001:10001 /var/lib/cds-service
VOLUME ["/var/lib/cds-service"]
WORKDIR /var/lib/cds-service

USER 10001:10001
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).close()"]

CMD ["cds-service", "serve", "--host", "0.0.0.0"]
