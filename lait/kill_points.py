"""Named points at which a job can be made to die, so a test proves a kill there loses nothing.

    LAIT_KILL_AT=committed:*.tar lait download ...        # dies right after the first tar
    LAIT_KILL_AT='before_commit:*/stats.json@2' ...       # while the 2nd stats.json is partial

The variable holds `POINT[:SUBJECT_GLOB][@N]`: when the process reaches `POINT` the N-th time
(default 1) with a subject (a file path, for the commit points) matching the glob, it sends
SIGKILL to its whole process group (the launcher and its Beam workers), as `kill -9` of a
job started in its own session would. Unset (always, outside such tests), a point costs one
environment lookup. The points:

- `before_commit:PATH`: a file's bytes are written under its temporary name, not yet renamed
  into place (`lait.dataset.storage.atomic_output`);
- `committed:PATH`: the file has just been committed;
- `run_info_added`: the launcher has added its run information to stats.json, and the
  staging folder is still there (`pipeline.run`);
- `staging_outcomes_removed`: the end-of-job clean-up has removed the fetch outcome files
  but not yet the staged images (`pipeline.staging.remove_staging`);
- `retry_written`: a `--retry-failed` job on a finished folder has written its files and
  marked its phase `written`, and has not yet deleted the ledger parts it replaced
  (`pipeline.retry`).

Counts are per process: a test that names the N-th occurrence runs the job in one process
(`--direct_running_mode=in_memory`).
"""

from __future__ import annotations

import fnmatch
import os
import signal
import threading

ENV = "LAIT_KILL_AT"
_lock = threading.Lock()
_seen = 0


def kill_point(point: str, subject: str = "") -> None:
    """Die here (SIGKILL to the process group) if `LAIT_KILL_AT` names this point."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    pattern, _, nth = spec.rpartition("@") if "@" in spec else (spec, "", "1")
    wanted, _, glob = pattern.partition(":")
    if wanted != point or (glob and not fnmatch.fnmatch(subject, glob)):
        return
    global _seen
    with _lock:
        _seen += 1
        if _seen != int(nth):
            return
    os.killpg(os.getpgrp(), signal.SIGKILL)
