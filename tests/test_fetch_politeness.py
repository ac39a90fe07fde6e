"""The politeness key a job-wide fetch schedule groups by, and its config value."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.fetch import FetchConfig, politeness_key


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://Example.COM/a.jpg", "example.com"),
        ("http://example.com:80/a.jpg", "example.com"),
        ("https://example.com:443/a.jpg", "example.com"),
        ("http://example.com:8080/a.jpg", "example.com:8080"),
        ("https://example.com:80/a.jpg", "example.com:80"),
        ("http://127.0.0.1:5000/x", "127.0.0.1:5000"),
        ("http://[::1]:8000/x", "[::1]:8000"),
        ("https://bücher.example/x", "xn--bcher-kva.example"),
        ("ftp://example.com/a.jpg", ""),
        ("not a url", ""),
    ],
)
def test_politeness_key(url: str, key: str) -> None:
    assert politeness_key(url) == key


def test_www_and_apex_are_different_hosts() -> None:
    assert politeness_key("https://www.example.com/") != politeness_key("https://example.com/")


def test_max_workers_per_host_defaults_and_loads() -> None:
    assert FetchConfig().max_workers_per_host == 4
    assert load_config(None, {"fetch.max_workers_per_host": 2}).fetch.max_workers_per_host == 2
    with pytest.raises(ConfigError, match="max_workers_per_host"):
        load_config(None, {"fetch.max_workers_per_host": 0})
