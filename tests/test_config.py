from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config, parse_override

EXAMPLE = Path(__file__).parent.parent / "configs" / "crawl.example.yaml"


def test_example_config_loads_and_flags_override_it() -> None:
    config = load_config(EXAMPLE, {"fetch.retries": 5, "output.folder": "out/x"})
    assert config.sources.depth == 1 and config.fetch.respect_robots_txt is True
    assert config.language.languages == {"en": 0.05}
    assert config.clip.model == "ViT-B-32" and config.clip.min_score == 0.28
    assert (config.fetch.retries, config.output.folder) == (5, "out/x")
    assert config.to_dict()["image"]["min_side"] == 300


def test_config_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown option.*'retires'"):
        load_config(None, {"fetch.retires": 3})
    with pytest.raises(ConfigError, match="not one of"):
        load_config(None, {"image.resize_mode": "stretch"})
    with pytest.raises(ConfigError, match="not of type int"):
        load_config(None, {"fetch.retries": "many"})
    with pytest.raises(ConfigError, match=r"SECTION\.OPTION=VALUE"):
        parse_override("retries")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)
    assert parse_override("fetch.allowed_networks=[127.0.0.1/32]") == (
        "fetch.allowed_networks",
        ["127.0.0.1/32"],
    )
