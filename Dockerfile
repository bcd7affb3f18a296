# Sluiceway: slim, non-root, with a health check on /healthz.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# Built in /src and installed as the one `sluiceway` package; the working directory is an empty
# task root (Lambda's /var/task), the default CODE_PATH for handlers mounted or copied there.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY core ./core
COPY pollers ./pollers
COPY router ./router
COPY handlers ./handlers
COPY config ./config
RUN pip install --no-cache-dir . && rm -rf /src && useradd --create-home --uid 10001 sluiceway \
    && mkdir -p /data /var/task && chown sluiceway /data
WORKDIR /var/task
USER sluiceway
ENV SLUICEWAY_CHECKPOINTS__PATH=/data/sluiceway.db SLUICEWAY_HTTP__PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["sluiceway"]
CMD ["run"]
