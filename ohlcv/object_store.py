"""Object storage (AWS S3, MinIO, any S3-compatible endpoint), configured the way AWS tools are.

The endpoint and region come from the settings (`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`,
`AWS_REGION` or `AWS_DEFAULT_REGION`), resolved once at the edge. Credentials never enter the
settings, which travel into workflow checkpoints: each process reads them from its own
environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), and without
them the AWS SDK's default chain applies (profile, instance profile). From those this module
builds what each client needs:

- pyiceberg's FileIO properties (`s3.endpoint`, `s3.region`, keys): pyiceberg 0.12 reads no
  AWS_* variable itself, and without a region it asks AWS for the bucket's (7 s, per process);
- the URI of Ray's workflow storage, with the endpoint as pyarrow's query parameters;
- pyarrow filesystems for listing a table's prefix (unreferenced files).

A pre-flight check of a bucket fails fast (one try, short timeouts) with one line that names the
bucket and what to check, and never a key. An endpoint means path-style addressing (MinIO):
pyarrow uses it whenever an endpoint is overridden.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import urlencode, urlsplit

from pyarrow import fs as pafs

from ohlcv.errors import ConfigError

__all__ = [
    "is_s3",
    "bucket_of",
    "fileio_properties",
    "filesystem",
    "ray_storage_uri",
    "check_bucket",
    "describe_storage_error",
    "SingleAttempt",
]

log = logging.getLogger(__name__)

# When an endpoint is given without a region, S3-compatible servers (MinIO, moto) take any
# region, and naming one spares pyiceberg its lookup of the bucket's region on AWS.
DEFAULT_REGION_WITH_ENDPOINT = "us-east-1"
# Bounds on how long a dead or silent endpoint can stall a command (pyarrow's defaults let one
# request hang for many seconds, and retry it).
CONNECT_TIMEOUT_SECONDS = 5
# pyarrow aborts a request that moves less than one byte a second for this long: a stall, not a
# slow transfer, so it is safe for large files too.
REQUEST_TIMEOUT_SECONDS = 30
_CREDENTIALS = {
    "s3.access-key-id": "AWS_ACCESS_KEY_ID",
    "s3.secret-access-key": "AWS_SECRET_ACCESS_KEY",
    "s3.session-token": "AWS_SESSION_TOKEN",
}


def is_s3(uri: str | None) -> bool:
    return bool(uri) and urlsplit(uri).scheme in ("s3", "s3a")


def bucket_of(uri: str) -> str:
    return urlsplit(uri).netloc


def _region(endpoint: str | None, region: str | None) -> str | None:
    return region or (DEFAULT_REGION_WITH_ENDPOINT if endpoint else None)


def fileio_properties(endpoint: str | None, region: str | None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """pyiceberg FileIO properties for S3: endpoint, region, timeouts and this process's keys.

    The keys ride along in the FileIO that Spark tasks unpickle, so an executor whose
    environment lacks them still reads the warehouse; none of these values is ever printed.
    """
    env = os.environ if env is None else env
    properties = {"s3.connect-timeout": str(CONNECT_TIMEOUT_SECONDS), "s3.request-timeout": str(REQUEST_TIMEOUT_SECONDS)}
    if endpoint:
        properties["s3.endpoint"] = endpoint
    if (resolved := _region(endpoint, region)) is not None:
        properties["s3.region"] = resolved
    for name, variable in _CREDENTIALS.items():
        if env.get(variable):
            properties[name] = env[variable]
    return properties


def filesystem(uri: str, properties: Mapping[str, str]) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a location: the same one pyiceberg's FileIO uses."""
    from pyiceberg.io import load_file_io

    parts = urlsplit(uri)
    if parts.scheme in ("", "file") or len(parts.scheme) == 1:
        return pafs.LocalFileSystem(), parts.path if parts.scheme == "file" else uri
    io = load_file_io({**properties}, uri)
    return io.fs_by_scheme(parts.scheme, parts.netloc), f"{parts.netloc}{parts.path}".rstrip("/")


def ray_storage_uri(uri: str, endpoint: str | None, region: str | None) -> str:
    """Ray's workflow storage URI for an s3:// location: the endpoint and region as the query
    parameters pyarrow takes (`endpoint_override`, `scheme`, `region`). Other URIs pass as they are."""
    if not is_s3(uri) or "?" in uri:
        return uri
    query = {}
    if endpoint:
        parts = urlsplit(endpoint)
        query["endpoint_override"] = parts.netloc or parts.path
        query["scheme"] = parts.scheme or "https"
    if (resolved := _region(endpoint, region)) is not None:
        query["region"] = resolved
    return f"{uri}?{urlencode(query)}" if query else uri


class SingleAttempt(pafs.AwsStandardS3RetryStrategy):
    """One try, no retry: a pre-flight check should answer in about a second, not after backoff."""

    def __init__(self) -> None:
        super().__init__(max_attempts=1)


def _where(endpoint: str | None) -> str:
    return f"the endpoint {endpoint}" if endpoint else "AWS S3"


def describe_storage_error(exc: BaseException, bucket: str, endpoint: str | None, what: str) -> str | None:
    """One line for an S3 failure pyarrow reported as an OSError: which bucket, what to check.

    None when `exc` does not look like a storage failure. The text names the bucket and the
    endpoint only: pyarrow's own message can carry object keys, never credentials, but it is
    not shown either.
    """
    text = str(exc)
    if "NO_SUCH_BUCKET" in text or "specified bucket does not exist" in text:
        return f"{what}: bucket {bucket!r} does not exist at {_where(endpoint)} (create it, or check the bucket name)"
    if "ACCESS_DENIED" in text or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text or "Forbidden" in text:
        return (
            f"{what}: access to bucket {bucket!r} at {_where(endpoint)} was denied "
            "(check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the instance profile, and the bucket policy for this prefix)"
        )
    if "NETWORK_CONNECTION" in text or "curlCode: 7" in text or "curlCode: 6" in text or "curlCode: 28" in text or "Timeout was reached" in text:
        return (
            f"{what}: cannot reach {_where(endpoint)} for bucket {bucket!r} "
            "(check AWS_ENDPOINT_URL, that the server runs, and the network)"
        )
    if "curlCode: 35" in text or "SSL" in text:
        return f"{what}: TLS failed talking to {_where(endpoint)} for bucket {bucket!r} (an http:// endpoint needs the http:// prefix in AWS_ENDPOINT_URL)"
    return None


@lru_cache(maxsize=32)
def _checked(uri: str, endpoint: str | None, region: str | None, write: bool, what: str) -> None:
    properties = {
        **fileio_properties(endpoint, region),
        "s3.connect-timeout": "2",
        "s3.request-timeout": "5",
        "s3.retry-strategy-impl": f"{__name__}.SingleAttempt",
    }
    bucket = bucket_of(uri)
    if not bucket:
        raise ConfigError(f"{what} {uri!r} names no bucket: use s3://BUCKET/PREFIX")
    try:
        fs, path = filesystem(uri, properties)
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise ConfigError(f"{what}: bucket {bucket!r} does not exist at {_where(endpoint)} (create it, or check the bucket name)")
        fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))  # may we list the prefix?
        if write:
            probe = f"{path}/.ohlcv-write-check-{uuid.uuid4().hex}"
            with fs.open_output_stream(probe) as out:
                out.write(b"ok")
            fs.delete_file(probe)
    except OSError as exc:
        described = describe_storage_error(exc, bucket, endpoint, what)
        if described is None:
            raise
        raise ConfigError(described) from None


def check_bucket(uri: str, endpoint: str | None, region: str | None, what: str, write: bool = False) -> None:
    """Fail with one ConfigError line unless the bucket of `uri` exists, answers, and lets this
    process list (and with `write`, write and delete under) the prefix. Checked once per process."""
    if is_s3(uri):
        _checked(uri, endpoint, region, write, what)
