# The project image: Python 3.11, a Java 17 runtime for Spark, and the project with the
# PostgreSQL catalog driver. One image serves the Ray head, the workers and the scheduler job.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/ohlcv
COPY pyproject.toml README.md ./
COPY ohlcv ./ohlcv
COPY workflows ./workflows
RUN pip install --no-cache-dir ".[postgres]"

# Ray writes its session files here; the warehouse and the workflow storage live in a bucket.
ENV RAY_TMPDIR=/tmp/ray
ENTRYPOINT ["tini", "--"]
CMD ["ray", "--help"]
