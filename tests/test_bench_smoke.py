"""The bench smoke runner: every bench script has a --smoke size, and the runner's verdicts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run_smoke import bench_scripts, last_json_line, main, run_smoke

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _script(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text("import sys\nassert sys.argv[1:] == ['--smoke'], sys.argv\n" + body)
    return path


def test_every_bench_script_takes_smoke() -> None:
    scripts = bench_scripts(BENCH)
    assert {"download.py", "langid.py", "extract.py"} <= {p.name for p in scripts}
    assert "run_smoke.py" not in {p.name for p in scripts}
    missing = [p.name for p in scripts if '"--smoke"' not in p.read_text()]
    assert not missing, f"bench scripts without a --smoke size: {missing}"


@pytest.mark.parametrize(
    ("stdout", "parsed"),
    [
        ('line\n{"ratio": 1.5}\n\n', {"ratio": 1.5}),
        ('{"ratio": 1.5}\nsummary 1.5x\n', None),
        ("[1, 2]\n", None),
        ("", None),
    ],
)
def test_last_json_line(stdout: str, parsed: dict[str, object] | None) -> None:
    assert last_json_line(stdout) == parsed


def test_runner_judges_each_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _script(tmp_path, "good", 'print("3 images/s")\nprint(\'{"ratio": 2.0}\')\n')
    _script(tmp_path, "crashes", "print('{\"ratio\": 2.0}')\nraise SystemExit(3)\n")
    _script(tmp_path, "no_json", 'print("ratio 2.0")\n')
    _script(tmp_path, "slow", "import time\ntime.sleep(30)\n")
    (tmp_path / "_private.py").write_text("raise SystemExit(1)\n")

    assert [p.name for p in bench_scripts(tmp_path)] == [
        "crashes.py",
        "good.py",
        "no_json.py",
        "slow.py",
    ]
    assert run_smoke(tmp_path / "good.py", 20).summary == {"ratio": 2.0}
    assert run_smoke(tmp_path / "slow.py", 1).problem == "ran past 1 s"

    status = main(["--folder", str(tmp_path), "--only", "good,crashes,no_json"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == 1
    assert summary["passed"] == ["good.py"]
    assert summary["failed"] == {
        "crashes.py": "exit status 3",
        "no_json.py": "its last line is not a JSON object",
    }
    assert main(["--folder", str(tmp_path), "--only", "good"]) == 0


def test_a_real_bench_passes_its_smoke_run() -> None:
    result = run_smoke(BENCH / "langid.py", 300, python=sys.executable)
    assert result.problem is None, result.output_tail
    assert result.summary is not None and result.summary["smoke"] is True
    assert result.summary["captions"] == 4096
