"""Where dataset files live (a local folder or any fsspec URL) and how they are committed.

A file is committed atomically: readers see either nothing or the whole file. Locally it is
written under a hidden temporary name beside its target and renamed into place; on object
stores (gs://, s3://) it is written to a local temporary file and uploaded whole, since an
object only becomes visible when its upload completes.

A committed local file gets the mode a plain `open(path, "w")` would give it (0666 less the
umask, and any default ACL of the folder): the temporary is created with `os.open(..., 0o666)`
so the kernel applies the umask, never with `tempfile.mkstemp`, whose 0600 would survive
the rename and hide the dataset from everyone but its writer. Reading the umask instead
(`os.umask` twice) would race with other threads.

An output folder on a remote store is checked when a job is launched (`check_output_location`):
one empty object is written under it and deleted, so a bucket that does not exist, missing
credentials or a refused permission stop the job with one clear error before any work.

Parquet is read by path through pyarrow's own filesystem (`open_parquet`), never through a
Python file object: with one, Arrow's reader threads call back into Python, and a process
that read that way can abort at exit ("terminate called without an active exception",
apache/arrow#34314) after doing its work.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from typing import IO

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from lait.kill_points import kill_point

TEMP_PREFIX = "."
TEMP_SUFFIX = ".partial"
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
_CREATE_MODE = 0o666  # what open() asks for; the kernel takes the umask off
WRITE_CHECK_NAME = f"{TEMP_PREFIX}lait-write-check{TEMP_SUFFIX}"  # a temporary: readers skip it
# Stores whose makedirs would create a missing bucket; they have no folders to make.
OBJECT_STORE_PROTOCOLS = frozenset({"gs", "gcs", "s3", "s3a"})
_CREDENTIALS_HELP = (
    "gs:// uses Application Default Credentials (`gcloud auth application-default login`, or "
    "GOOGLE_APPLICATION_CREDENTIALS naming a service-account key); s3:// uses the AWS "
    "variables or profile (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE; "
    "AWS_ENDPOINT_URL for another S3 server). The account needs permission to create and "
    "delete objects under the folder."
)


class OutputLocationError(ValueError):
    """An output folder cannot be written: no such bucket, no credentials, or no permission."""


def filesystem(path: str | os.PathLike[str]) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem that holds `path`, and the path as that filesystem names it."""
    fs, root = fsspec.core.url_to_fs(os.fspath(path))
    return fs, root


def join(base: str, *parts: str) -> str:
    """Join path parts with '/', which every fsspec filesystem (and POSIX) accepts."""
    return "/".join([base.rstrip("/"), *parts])


def arrow_filesystem(fs: fsspec.AbstractFileSystem) -> pafs.FileSystem:
    """pyarrow's filesystem for `fs`: Arrow's native one for local folders, and the fsspec
    filesystem wrapped (`FSSpecHandler`) for any other store, so gs:// and s3:// paths keep
    fsspec's credentials and options."""
    if isinstance(fs, LocalFileSystem):
        return pafs.LocalFileSystem()
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def open_parquet(fs: fsspec.AbstractFileSystem, path: str) -> pq.ParquetFile:
    """The parquet file at `path`, opened by path; use it as a context manager so the file
    closes when the reading ends."""
    return pq.ParquetFile(path, filesystem=arrow_filesystem(fs))


def read_parquet(
    fs: fsspec.AbstractFileSystem, path: str, columns: list[str] | None = None
) -> pa.Table:
    """The whole parquet file at `path` (only `columns`, if given) as one table."""
    with open_parquet(fs, path) as parquet:
        return parquet.read(columns=columns)


def is_object_store(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether `fs` is a bucket store (gs://, s3://): no folders, only objects."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return bool(OBJECT_STORE_PROTOCOLS.intersection(protocols))


def check_output_location(folder: str) -> None:
    """Raise `OutputLocationError` unless objects can be written and deleted under `folder`.

    Local folders are left to the writer (os.makedirs says what is wrong). On any other store
    one empty object (a temporary name, which readers ignore) is written and deleted: the
    only check that proves a bucket exists and the credentials may write there. Before that,
    a gs:// folder without Google credentials is refused: gcsfs, finding none, falls back to
    anonymous access, and the write would fail with a bare 401 (or, on a bucket open to all,
    succeed as nobody).
    """
    fs, root = filesystem(folder)
    if isinstance(fs, LocalFileSystem):
        return
    _require_google_credentials(fs, folder)
    probe = join(root, WRITE_CHECK_NAME)
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as error:
        raise _output_error(folder, root.split("/", 1)[0], error) from error


def _output_error(folder: str, bucket: str, error: Exception) -> OutputLocationError:
    """The one error a failed write check becomes: what went wrong, and what to do."""
    if isinstance(error, FileNotFoundError):
        return OutputLocationError(
            f"cannot write to {folder}: bucket {bucket!r} does not exist ({error}). Create it "
            f"first (`gcloud storage buckets create gs://{bucket}` or `aws s3 mb s3://{bucket}`) "
            "or correct the output path."
        )
    # s3fs raises PermissionError for AccessDenied; gcsfs an OSError("Forbidden: ...") for 403.
    if isinstance(error, PermissionError) or (
        isinstance(error, OSError) and str(error).startswith("Forbidden")
    ):
        detail = str(error).replace("\n", " ").strip()
        return OutputLocationError(
            f"cannot write to {folder}: permission denied ({detail}). Grant the account "
            f"permission to create and delete objects in bucket {bucket!r} (e.g. "
            "roles/storage.objectAdmin, or s3:PutObject and s3:DeleteObject), or use another "
            f"output folder. {_CREDENTIALS_HELP}"
        )
    # Missing or refused credentials raise each library's own type (botocore's
    # NoCredentialsError, gcsfs's HttpError, google-auth's errors); none shares a base.
    return OutputLocationError(
        f"cannot write to {folder}: {type(error).__name__}: {error}. {_CREDENTIALS_HELP}"
    )


def _require_google_credentials(fs: fsspec.AbstractFileSystem, folder: str) -> None:
    """Raise `OutputLocationError` when gcsfs fell back to anonymous access without being
    asked to (token="anon") and no emulator (STORAGE_EMULATOR_HOST) is the server."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if "gs" not in protocols and "gcs" not in protocols:
        return
    if os.environ.get("STORAGE_EMULATOR_HOST") or fs.storage_options.get("token") == "anon":
        return
    if getattr(getattr(fs, "credentials", None), "method", None) != "anon":
        return
    named = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if named and not os.path.exists(named):
        why = f"GOOGLE_APPLICATION_CREDENTIALS names {named}, which does not exist"
    elif named:
        why = f"GOOGLE_APPLICATION_CREDENTIALS names {named}, which holds no usable credentials"
    else:
        why = "no Google credentials were found"
    raise OutputLocationError(
        f"cannot write to {folder}: {why}. Set GOOGLE_APPLICATION_CREDENTIALS to a "
        "service-account key file, or run `gcloud auth application-default login`, or run on "
        f"Google Cloud with a service account. {_CREDENTIALS_HELP}"
    )


def is_temporary(name: str) -> bool:
    """Whether a file name is an uncommitted write (to be ignored by readers)."""
    base = name.rsplit("/", 1)[-1]
    return base.startswith(TEMP_PREFIX) and base.endswith(TEMP_SUFFIX)


@contextlib.contextmanager
def atomic_output(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[IO[bytes]]:
    """Open `path` for writing so that it appears only complete, or not at all.

    If the body raises (or the process dies), the target is left as it was.
    """
    directory, name = path.rsplit("/", 1) if "/" in path else (".", path)
    local = isinstance(fs, LocalFileSystem)
    if local:
        os.makedirs(directory, exist_ok=True)
        fd, temp_path = _create_temporary(directory, name)
    else:
        # Staged privately in the system's temp folder; the store sets the object's access.
        fd, temp_path = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if local:
                os.fsync(handle.fileno())
        kill_point("before_commit", path)
        if local:
            os.replace(temp_path, path)
        else:
            fs.put_file(temp_path, path)
        kill_point("committed", path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)


def _create_temporary(directory: str, name: str) -> tuple[int, str]:
    """Create a new temporary beside `name` as open() creates files; return (fd, path)."""
    while True:
        path = os.path.join(directory, f"{TEMP_PREFIX}{name}.{secrets.token_hex(8)}{TEMP_SUFFIX}")
        try:
            return os.open(path, _CREATE_FLAGS, _CREATE_MODE), path
        except FileExistsError:  # a 64-bit collision: draw another name
            continue


def remove_stale_temporaries(fs: fsspec.AbstractFileSystem, folder: str) -> int:
    """Delete uncommitted writes left in `folder` by a killed writer; return how many."""
    if not fs.exists(folder):
        return 0
    removed = 0
    for entry in fs.ls(folder, detail=False):
        if is_temporary(entry):
            fs.rm(entry)
            removed += 1
    return removed
