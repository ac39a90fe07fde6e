"""The safe fetcher: one HTTP client for pages, images and robots.txt.

    fetcher = Fetcher(FetchConfig())          # in DoFn.setup
    try:
        response = fetcher.fetch(url, accept="image")
    except FetchRejected as rejected:
        record = record.rejected(
            rejected.reason, rejected.detail, value=rejected.value, limit=rejected.limit
        )
    fetcher.counters()                        # -> Beam Metrics
    fetcher.close()                           # in DoFn.teardown

See `client.py` for what a fetch checks, `addresses.py` for the address policy and
`connection.py` for how connections are pinned to the vetted address.
"""

from pipeline.fetch.addresses import default_resolver
from pipeline.fetch.client import Fetcher
from pipeline.fetch.config import FetchConfig
from pipeline.fetch.errors import FetchRejected
from pipeline.fetch.response import FetchResponse
from pipeline.fetch.urls import politeness_key

__all__ = [
    "FetchConfig",
    "FetchRejected",
    "FetchResponse",
    "Fetcher",
    "default_resolver",
    "politeness_key",
]
