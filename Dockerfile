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
# Every node keeps up to 12 idle workers: Ray's default is the node's CPU count, long-lived
# actors count against it, and each workflow step's try (a task of its own) would otherwise start
# a fresh worker that imports the project again (workflows/local_ray.py, WARM_WORKERS).
ENV RAY_num_workers_soft_limit=12
ENTRYPOINT ["tini", "--"]
CMD ["ray", "--help"]
