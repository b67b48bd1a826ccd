"""Local paths and object-store URIs (`s3://bucket/prefix`, `gs://...`) through pyarrow's filesystem layer.

Endpoint, region and credentials come from the standard environment variables that pyarrow and boto3 read
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, ...): never from config
files or code. Failures become one `StorageError` line naming the URI and the cause, never a credential.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

CAUSES = (  # (pattern in pyarrow's / the store's message, what the user is told)
    (r"NO_SUCH_BUCKET|NoSuchBucket|bucket does not exist", "the bucket does not exist"),
    (r"INVALID_ACCESS_KEY|InvalidAccessKeyId|SIGNATURE_DOES_NOT_MATCH|SignatureDoesNotMatch|ACCESS_DENIED|AccessDenied"
     r"|Forbidden|\b403\b",
     "access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    (r"NETWORK_CONNECTION|Could not connect|curlCode|Couldn't connect|Connection refused|timed out",
     "the endpoint is unreachable: check AWS_ENDPOINT_URL and the network"),
)  # fmt: skip


class StorageError(OSError):
    """A storage location cannot be used; the message names the URI and the cause (never a secret)."""


def is_remote(location: str) -> bool:
    """True for an object-store URI (s3://, gs://, ...), false for a local path or file:// URI."""
    return "://" in location and not location.startswith("file://")


def contains(outer: str, inner: str) -> bool:
    """Whether location `inner` is `outer` or lies under it: local paths (or file:// URIs) compared resolved,
    object-store URIs as text."""
    if is_remote(outer) or is_remote(inner):
        outer, inner = outer.rstrip("/"), inner.rstrip("/")
        return inner == outer or inner.startswith(outer + "/")
    outer_path, inner_path = (Path(p.removeprefix("file://")).expanduser().resolve() for p in (outer, inner))
    return inner_path == outer_path or outer_path in inner_path.parents


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for `location` and the path inside it (bucket/key for object stores)."""
    if "://" not in location:
        return pafs.LocalFileSystem(), location
    try:
        return pafs.FileSystem.from_uri(location)
    except (OSError, pa.ArrowException) as err:
        raise explain(err, location) from err


def join(location: str, *parts: str) -> str:
    return "/".join([location.rstrip("/"), *parts])


def explain(err: BaseException, location: str) -> StorageError:
    """`err` from pyarrow or an object store, as one line naming `location`."""
    message = str(err)
    for pattern, cause in CAUSES:
        if re.search(pattern, message):
            return StorageError(f"{location}: {cause}")
    first = message.splitlines()[0] if message else type(err).__name__
    return StorageError(f"{location}: {first}")


def require_bucket(location: str) -> None:
    """For an object-store location, raise StorageError when its bucket does not exist (a missing key inside an
    existing bucket is the caller's business)."""
    if not is_remote(location):
        return
    fs, path = filesystem(location)
    bucket = path.split("/", 1)[0]
    try:
        missing = fs.get_file_info(bucket).type == pafs.FileType.NotFound
    except (OSError, pa.ArrowException) as err:
        raise explain(err, location) from err
    if missing:
        raise StorageError(f"{location}: the bucket does not exist")


def check_writable(location: str) -> None:
    """Fail now, before any work, if `location` cannot be written: write a probe object and delete it."""
    fs, path = filesystem(location)
    probe = f"{path.rstrip('/')}/.write-check-{uuid.uuid4().hex}"
    try:
        if not is_remote(location):  # object stores have no directories to create
            fs.create_dir(path.rstrip("/"), recursive=True)
        with fs.open_output_stream(probe) as out:
            out.write(b"")
        fs.delete_file(probe)
    except (OSError, pa.ArrowException) as err:
        raise explain(err, location) from err


def list_files(location: str) -> list[str]:
    """Every file under `location` (recursively), as paths relative to it; empty when it does not exist."""
    fs, path = filesystem(location)
    base = path.rstrip("/")
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except (OSError, pa.ArrowException) as err:
        raise explain(err, location) from err
    return sorted(i.path[len(base) + 1 :] for i in infos if i.type == pafs.FileType.File)
