"""Run every bench script at its `--smoke` size; fail unless each exits 0 and ends in JSON.

Benchmarks rot when nothing runs them: CI runs this after the tests (`make bench-smoke`), so a
change that breaks a bench breaks CI. Each `bench/*.py` (but this runner) runs in its own
process, from the repository root, offline, with `--smoke`. A script passes when it exits 0
within `--timeout` seconds and its last non-empty stdout line is one JSON object.

    .venv/bin/python bench/run_smoke.py [--only download,langid] [--timeout 600]

Prints one line per script, then one JSON object: {"passed": [...], "failed": {...}, ...}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OFFLINE = {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
}


@dataclasses.dataclass(frozen=True)
class SmokeResult:
    """One bench script's smoke run: whether it passed, why not, and its JSON."""

    script: str
    seconds: float
    problem: str | None  # None when it passed
    summary: dict[str, object] | None
    output_tail: str


def bench_scripts(folder: Path = BENCH) -> list[Path]:
    """Every bench script in `folder`, sorted, without this runner and private modules."""
    return sorted(
        p
        for p in folder.glob("*.py")
        if p.name != Path(__file__).name and not p.name.startswith("_")
    )


def last_json_line(stdout: str) -> dict[str, object] | None:
    """The last non-empty line of `stdout` parsed as a JSON object, or None if it is not one."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        parsed = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def run_smoke(script: Path, timeout_s: float, python: str = sys.executable) -> SmokeResult:
    """Run `script --smoke` and judge it."""
    env = {**os.environ, **OFFLINE}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    started = time.monotonic()
    try:
        done = subprocess.run(
            [python, str(script), "--smoke"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout or b""
        text = out.decode(errors="replace") if isinstance(out, bytes) else out
        return SmokeResult(
            script.name, time.monotonic() - started, f"ran past {timeout_s:.0f} s", None, text
        )
    seconds = time.monotonic() - started
    tail = (done.stdout + done.stderr)[-3000:]
    summary = last_json_line(done.stdout)
    if done.returncode != 0:
        problem: str | None = f"exit status {done.returncode}"
    elif summary is None:
        problem = "its last line is not a JSON object"
    else:
        problem = None
    return SmokeResult(script.name, seconds, problem, summary, tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--only", help="comma-separated script names (without .py)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per script")
    parser.add_argument("--folder", default=str(BENCH), help="where the scripts are")
    args = parser.parse_args(argv)
    scripts = bench_scripts(Path(args.folder))
    if args.only:
        wanted = {name.strip().removesuffix(".py") for name in args.only.split(",")}
        unknown = wanted - {p.stem for p in scripts}
        if unknown:
            parser.error(f"no such bench script(s): {sorted(unknown)}")
        scripts = [p for p in scripts if p.stem in wanted]
    results = []
    for script in scripts:
        result = run_smoke(script, args.timeout)
        results.append(result)
        verdict = "ok" if result.problem is None else f"FAILED: {result.problem}"
        print(f"{script.name:22s} {result.seconds:6.1f} s  {verdict}", flush=True)
        if result.problem is not None:
            print("    " + result.output_tail.replace("\n", "\n    "), flush=True)
    failed = {r.script: r.problem for r in results if r.problem is not None}
    print(
        json.dumps(
            {
                "passed": [r.script for r in results if r.problem is None],
                "failed": failed,
                "seconds": {r.script: round(r.seconds, 1) for r in results},
            }
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
