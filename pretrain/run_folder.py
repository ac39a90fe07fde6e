"""A pre-training run folder: a local folder, or a folder on an object store (gs://, s3://).

The trainer always writes into a local folder (`RunFolder.local`). When `--out` is a local path
that is the run folder itself. When it is a bucket folder, `local` is a private temporary
working copy and the run folder is kept in the bucket by publishing to it: each checkpoint as
it is saved (`pretrain.checkpoint.publish_checkpoint`: its files, then its `COMPLETE` marker),
with the stage's logs; a stage's `final/` and then its `summary.json` (the summary last: a
stage counts as done once it is there); the plan and the run's summary. A rerun downloads what
it resumes from: the summaries and `final/` of the stages done, and the latest complete
checkpoint and logs of the stage under way. Only the main rank publishes; every rank
downloads what it reads, so the ranks need no shared disk.

In the bucket, a stage's resume point is `NN-stage/checkpoints/step-N/` (with `COMPLETE`)
instead of the local `NN-stage/checkpoint/`; everything else has the local layout.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from fsspec.implementations.local import LocalFileSystem

from lait.dataset.storage import check_output_location, filesystem, join
from pretrain.checkpoint import (
    delete_remote_checkpoints,
    fetch_checkpoint,
    find_remote_checkpoint,
    publish_checkpoint,
)

LOG_FILE = "log.jsonl"
TENSORBOARD_DIR = "tb"


class RunFolder:
    """Where a run's files are written (`local`) and, for a bucket `--out`, published."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        text = os.fspath(out_dir)
        fs, root = filesystem(text)
        self.remote: str | None = None
        if isinstance(fs, LocalFileSystem):
            # `file:///x` names the local folder /x; a plain path stays as given.
            self.local = Path(root if "://" in text else text)
            return
        self.remote = text.rstrip("/")
        self._fs, self._root = fs, root.rstrip("/")
        self.local = Path(tempfile.mkdtemp(prefix="lait-run-"))

    @property
    def is_remote(self) -> bool:
        return self.remote is not None

    def check(self) -> None:
        """Raise `OutputLocationError` if a bucket run folder cannot be written (no such
        bucket, no credentials, no permission). Local folders: nothing to check."""
        if self.remote is not None:
            check_output_location(self.remote)

    def url(self, *parts: str) -> str:
        """The run folder's `parts` as the user names them (a URL for a bucket)."""
        if self.remote is None:
            return str(self.local.joinpath(*parts))
        return join(self.remote, *parts)

    def exists(self, *parts: str) -> bool:
        if self.remote is None:
            return self.local.joinpath(*parts).exists()
        path = join(self._root, *parts)
        self._fs.invalidate_cache(path.rsplit("/", 1)[0])
        return bool(self._fs.exists(path))

    def publish(self, *parts: str, append_only: bool = False) -> None:
        """Upload the local file or folder `parts` to the bucket (nothing for a local run).

        A folder's files are uploaded one object each. In an `append_only` folder, whose files
        only ever grow (TensorBoard's event files, one new name per run), a file already there
        with its size is skipped; anywhere else a same-sized file may hold other bytes (a
        retrained model), so every file goes up, and files of an older upload that the local
        folder no longer has are deleted afterwards (the bucket's folder mirrors it).
        """
        if self.remote is None:
            return
        source = self.local.joinpath(*parts)
        if source.is_file():
            self._fs.put_file(str(source), join(self._root, *parts))
            return
        if not source.is_dir():
            return
        target = join(self._root, *parts)
        self._fs.invalidate_cache(target)
        there: dict[str, int] = (
            {p: info["size"] for p, info in self._fs.find(target, detail=True).items()}
            if self._fs.exists(target)
            else {}
        )
        pairs = [
            (str(path), join(target, path.relative_to(source).as_posix()))
            for path in sorted(source.rglob("*"))
            if path.is_file()
        ]
        if append_only:
            pairs = [(lp, rp) for lp, rp in pairs if there.get(rp) != os.path.getsize(lp)]
        if pairs:
            self._fs.put([lp for lp, _ in pairs], [rp for _, rp in pairs])
        stale = [] if append_only else sorted(set(there) - {rp for _, rp in pairs})
        if stale:
            self._fs.rm(stale)

    def fetch(self, *parts: str) -> bool:
        """Download the bucket's file or folder `parts` into the local folder; return whether
        it was there (always True for a local run when the path exists)."""
        if self.remote is None:
            return self.local.joinpath(*parts).exists()
        source = join(self._root, *parts)
        target = self.local.joinpath(*parts)
        self._fs.invalidate_cache(source.rsplit("/", 1)[0])
        if not self._fs.exists(source):
            return False
        if self._fs.isfile(source):
            target.parent.mkdir(parents=True, exist_ok=True)
            self._fs.get_file(source, str(target))
            return True
        shutil.rmtree(target, ignore_errors=True)
        files = list(self._fs.find(source))
        locals_ = [target / p.removeprefix(source + "/") for p in files]
        for path in locals_:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._fs.get(files, [str(path) for path in locals_])
        return True

    def publish_checkpoint(self, stage: str, local: Path, step: int) -> str | None:
        """Publish the stage's local checkpoint folder (a bucket run); return its URL."""
        if self.remote is None:
            return None
        return publish_checkpoint(local, join(self.remote, stage), step)

    def fetch_checkpoint(self, stage: str, local: Path) -> tuple[str, int] | None:
        """Download the stage's latest complete checkpoint into `local`; return (its URL,
        its step), or None when the bucket holds none (or the run is local)."""
        if self.remote is None:
            return None
        found = find_remote_checkpoint(join(self.remote, stage))
        if found is not None:
            fetch_checkpoint(found[0], local)
        return found

    def delete_checkpoints(self, stage: str) -> None:
        """Forget the stage's published checkpoints (a run started again from scratch)."""
        if self.remote is not None:
            delete_remote_checkpoints(join(self.remote, stage))

    def close(self) -> None:
        """Remove the local working copy of a bucket run."""
        if self.remote is not None:
            shutil.rmtree(self.local, ignore_errors=True)
