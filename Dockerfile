# mmdata: one image for the recorders and the servers (see compose.yaml and docs/deploy.md).
#   docker build -t mmdata .
#   docker run --rm mmdata --help
#   docker run --rm -v mmdata-data:/srv/mmdata/data mmdata record -e kraken -s BTC/USD
# No HEALTHCHECK here: the same image runs recorders, which listen on no port;
# the serve service in compose.yaml carries its own healthcheck.
FROM python:3.11-slim

# A fixed, unprivileged uid/gid, so files in the volumes have a predictable owner.
RUN groupadd --system --gid 10001 mmdata \
 && useradd --system --no-log-init --uid 10001 --gid mmdata --home-dir /srv/mmdata --no-create-home \
        --shell /usr/sbin/nologin mmdata

# Install the package (runtime dependencies only, no test extras), then drop the sources.
COPY . /usr/src/mmdata
RUN pip install --no-cache-dir --disable-pip-version-check /usr/src/mmdata \
 && rm -rf /usr/src/mmdata

# The volume mount points exist before VOLUME and belong to mmdata, so a fresh named
# volume starts out writable by the non-root user.
RUN mkdir -p /srv/mmdata/data /srv/mmdata/logs \
 && chown -R mmdata:mmdata /srv/mmdata

WORKDIR /srv/mmdata
ENV MMDATA_DATA_DIR=/srv/mmdata/data \
    MMDATA_LOG_DIR=/srv/mmdata/logs \
    PYTHONUNBUFFERED=1
VOLUME ["/srv/mmdata/data", "/srv/mmdata/logs"]

USER mmdata

# relay (ws), REST, metrics, candles, stream
EXPOSE 8765 8080 8766 7000 8000

ENTRYPOINT ["mmdata"]
CMD ["--help"]
