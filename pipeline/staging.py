"""Image bytes staged beside the output while selection runs on metadata only.

A fetched and resized image is written once, right after its download, into a staging file
under `OUT/_staging/` (one file per fetch batch: a few MB, not one object per image), and
the record carries a reference to it (`Record.image_ref`). Every later stage — best caption,
dedupe, the decisions join, the shard assignment — shuffles metadata only; CLIP scoring and
the shard writer read the bytes back from the file by range. So pixels cross no shuffle at
all, where carrying them in the records would move them through three (at 100M samples of
~40 KB, ~12 TB of shuffle).

A staging file is named by the hash of its contents, so a retried bundle writes the same
file again rather than a second one, and is committed atomically like every dataset file
(readers never see a partial one). The folder is removed when the job has written its
dataset (`remove_staging`).

A reference reads `PATH#OFFSET+LENGTH`.

The staging folder is also what makes a killed job resumable: each fetch batch commits, after
its images, one small `*.outcomes.jsonl` file with the outcome of every URL it fetched (its
completion marker). A rerun into the same folder reads those back and fetches only the URLs
no committed batch answered; selection and writing, cheap and deterministic, run again over
everything, so the rerun ends with the dataset an uninterrupted run writes. `job.json` says
which fetch and image settings the staged outcomes came from.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from lait.dataset.layout import STAGING_DIR
from lait.dataset.storage import atomic_output, filesystem, join
from lait.kill_points import kill_point

OUTCOMES_SUFFIX = ".outcomes.jsonl"
JOB_FILE = "job.json"
# Keys of job.json beside the fetch and image settings: this invocation refetches staged
# transient failures (`--retry-failed` on a killed run); the state of a `--retry-failed` run
# on a finished folder (`pipeline.retry`).
REFETCH_TRANSIENT_KEY = "refetch_transient"
RETRY_KEY = "retry"


class StagingRefError(ValueError):
    """A staging reference that does not parse (not `PATH#OFFSET+LENGTH`)."""


def staging_folder(output_folder: str) -> str:
    """Where a job writing `output_folder` stages its images."""
    return join(output_folder, STAGING_DIR)


def stage_images(folder: str, images: Sequence[bytes]) -> list[str]:
    """Write `images` into one staging file under `folder`; their references, in order."""
    if not images:
        return []
    digest = hashlib.sha256()
    offsets = []
    offset = 0
    for image in images:
        digest.update(len(image).to_bytes(8, "big"))
        digest.update(image)
        offsets.append(offset)
        offset += len(image)
    fs, root = filesystem(folder)
    name = f"{digest.hexdigest()[:32]}.bin"
    path = join(root, name)
    fs.makedirs(root, exist_ok=True)
    with atomic_output(fs, path) as out:
        for image in images:
            out.write(image)
    base = join(folder, name)
    return [f"{base}#{start}+{len(image)}" for start, image in zip(offsets, images, strict=True)]


def commit_outcomes(folder: str, lines: Sequence[str]) -> str | None:
    """Commit one fetch batch's outcome lines (its completion marker); the file's path."""
    if not lines:
        return None
    text = "".join(f"{line}\n" for line in lines).encode("utf-8")
    fs, root = filesystem(folder)
    fs.makedirs(root, exist_ok=True)
    path = join(root, f"{hashlib.sha256(text).hexdigest()[:32]}{OUTCOMES_SUFFIX}")
    with atomic_output(fs, path) as out:
        out.write(text)
    return path


def outcome_files(folder: str) -> list[str]:
    """The committed outcome files under a staging folder (none if it does not exist)."""
    fs, root = filesystem(folder)
    if not fs.exists(root):
        return []
    found = sorted(fs.glob(join(root, f"*{OUTCOMES_SUFFIX}")))
    return [path if "://" not in folder else fs.unstrip_protocol(path) for path in found]


def read_outcome_lines(path: str) -> list[str]:
    """The lines of one committed outcome file."""
    fs, root = filesystem(path)
    return [line for line in fs.cat_file(root).decode("utf-8").splitlines() if line.strip()]


def read_job(output_folder: str) -> dict[str, Any] | None:
    """The settings an unfinished job staged its fetches under, if it left any."""
    return read_staging_job(staging_folder(output_folder))


def read_staging_job(folder: str) -> dict[str, Any] | None:
    """`read_job` given the staging folder itself."""
    fs, root = filesystem(join(folder, JOB_FILE))
    if not fs.exists(root):
        return None
    job: dict[str, Any] = json.loads(fs.cat_file(root))
    return job


def write_job(output_folder: str, job: dict[str, Any]) -> None:
    """Record the settings this job stages its fetches under (`read_job`)."""
    folder = staging_folder(output_folder)
    fs, root = filesystem(folder)
    fs.makedirs(root, exist_ok=True)
    with atomic_output(fs, join(root, JOB_FILE)) as out:
        out.write(json.dumps(job, sort_keys=True, default=str).encode("utf-8"))


def parse_ref(ref: str) -> tuple[str, int, int]:
    """(path, offset, length) of a staging reference."""
    path, sep, span = ref.rpartition("#")
    start, plus, length = span.partition("+")
    if not sep or not plus or not start.isdigit() or not length.isdigit():
        raise StagingRefError(f"not a staging reference (PATH#OFFSET+LENGTH): {ref!r}")
    return path, int(start), int(length)


def read_staged(ref: str) -> bytes:
    """The image bytes a staging reference points at."""
    path, start, length = parse_ref(ref)
    fs, root = filesystem(path)
    data: bytes = fs.cat_file(root, start=start, end=start + length)
    if len(data) != length:
        raise StagingRefError(f"{ref}: staging file holds {len(data)} of {length} bytes")
    return data


def read_staged_many(refs: Sequence[str]) -> list[bytes]:
    """The bytes of many references, each staging file opened once (the writer's case: a
    shard's images come from many files, several from each)."""
    by_file: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for index, ref in enumerate(refs):
        path, start, length = parse_ref(ref)
        by_file[path].append((start, length, index))
    out: list[bytes] = [b""] * len(refs)
    for path, spans in by_file.items():
        fs, root = filesystem(path)
        with fs.open(root, "rb") as staged:
            for start, length, index in sorted(spans):
                staged.seek(start)
                data = staged.read(length)
                if len(data) != length:
                    raise StagingRefError(
                        f"{path}: staging file ends before {start}+{length} (a partial file?)"
                    )
                out[index] = data
    return out


def remove_staging(output_folder: str) -> None:
    """Delete the staging folder of a finished job (nothing if there is none).

    The folder's `job.json` is what marks a run unfinished (`pipeline.run.prepare_output`),
    so it goes last, and the outcome files go before the images they point into: a kill
    during the clean-up leaves a run that resumes, whose every remaining outcome still has
    its image (an outcome removed is fetched again).
    """
    fs, root = filesystem(staging_folder(output_folder))
    if not fs.exists(root):
        return
    outcomes = fs.glob(join(root, f"*{OUTCOMES_SUFFIX}"))
    if outcomes:
        fs.rm(outcomes)
    kill_point("staging_outcomes_removed")
    job = join(root, JOB_FILE)
    rest = [path for path in fs.ls(root, detail=False) if path.rstrip("/") != job]
    if rest:
        fs.rm(rest, recursive=True)
    if fs.exists(job):
        fs.rm(job)
    if fs.exists(root):
        fs.rm(root, recursive=True)
