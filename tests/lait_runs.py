"""Running `lait` jobs from tests: loopback-only CLI arguments, and a run killed at a point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from lait.kill_points import ENV


def loopback_args(
    command: str,
    inputs: Sequence[str],
    out: Path | str,
    settings: Mapping[str, object],
    *extra: str,
) -> list[str]:
    """`lait COMMAND INPUTS --out OUT` on the loopback network, without a progress bar, with
    each setting as `--set NAME=VALUE`, then `extra`."""
    args = [command, *inputs, "--out", str(out), "--allow-network", "127.0.0.1/32", "--no-progress"]
    for name, value in settings.items():
        args += ["--set", f"{name}={value}"]
    return [*args, *extra]


def run_killed(args: list[str], point: str) -> subprocess.CompletedProcess[str]:
    """Run `lait ARGS` in its own session with the kill point set; it must die by SIGKILL."""
    code = f"import sys; from lait.cli import main; sys.exit(main({args!r}))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, ENV: point},
        start_new_session=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, (
        f"{point}: the job was not killed (exit {done.returncode}): {done.stderr[-2000:]}"
    )
    return done
