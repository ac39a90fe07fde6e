"""The pages ledger: one row per page the crawl tried, in `pages/*.parquet`.

Every page a crawl queued or refused leaves a row: fetched (with how many candidates it gave,
how many of them the per-page cap or a meta robots opt-out rejected, and how many same-site
links it offered), refused or failed at the fetch (robots.txt, a 404, a timeout, ... with the
fetch's reason and detail), or never queued because its site had reached
`fetch.max_pages_per_site` (`over_site_cap`). Pages read from WARC files are not tried and
leave no row: their candidates' `page_url` names them.

Rows are committed in parts like the rejects ledger (`pipeline.write.WriteGroups`: hash
groups of `rows_per_part`, each part one atomic parquet file), so the ledger's size never
rests on one worker, and a rerun of the job rewrites the same parts. Any parquet reader
takes the folder: `duckdb -c "select status, count(*) from 'DATASET/pages/*.parquet' group
by 1"`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from lait.dataset import layout, storage
from pipeline.write import WriteGroups

FETCHED = "fetched"  # the status of a page whose fetch succeeded
OVER_SITE_CAP = "over_site_cap"  # a linked page its site's cap kept from being queued

PAGES_SCHEMA = pa.schema(
    [
        pa.field("url", pa.string()),  # the URL the crawl asked for
        pa.field("final_url", pa.string()),  # where the fetch ended (after redirects)
        pa.field("site", pa.string()),  # the site it was queued under
        pa.field("depth", pa.int32()),  # 0 for a seed, n for a page n links away
        pa.field("status", pa.string()),  # "fetched", "over_site_cap" or a fetch reject reason
        pa.field("detail", pa.string()),  # the fetch's detail, or the page's meta opt-out
        pa.field("http_status", pa.int32()),
        pa.field("candidates", pa.int64()),  # records the page gave (every one is ledgered)
        pa.field("over_page_cap", pa.int64()),  # of those, rejected by the per-page cap
        pa.field("meta_robots_opt_out", pa.int64()),  # of those, by the page's meta robots
        pa.field("links", pa.int64()),  # same-site links it offered
    ]
)


@dataclasses.dataclass(frozen=True, slots=True)
class PageRow:
    """One page the crawl tried (see `PAGES_SCHEMA` for each column)."""

    url: str
    site: str
    depth: int
    status: str
    final_url: str | None = None
    detail: str | None = None
    http_status: int | None = None
    candidates: int = 0
    over_page_cap: int = 0
    meta_robots_opt_out: int = 0
    links: int = 0

    def as_row(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in PAGES_SCHEMA.names}


def pages_table(rows: Sequence[PageRow]) -> pa.Table:
    """Rows as an Arrow table with the ledger's fixed schema, in (url, status) order."""
    ordered = sorted(rows, key=lambda row: (row.url, row.status, row.depth))
    return pa.Table.from_pylist([row.as_row() for row in ordered], schema=PAGES_SCHEMA)


def write_pages_part(folder: str, part_id: int, rows: Sequence[PageRow]) -> int:
    """Commit `pages/PART.parquet` (atomically, through the dataset's storage layer); its rows."""
    fs, root = storage.filesystem(folder)
    path = storage.join(root, layout.pages_part_name(part_id))
    with storage.atomic_output(fs, path) as out:
        pq.write_table(pages_table(rows), out, compression="zstd")
    return len(rows)


class WritePages(beam.PTransform):
    """`PageRow`s → committed `pages/*.parquet` parts; returns each part's row count."""

    def __init__(self, folder: str, rows_per_part: int) -> None:
        super().__init__()
        self.folder = folder
        self.rows_per_part = rows_per_part

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        return rows | "Parts" >> WriteGroups(
            self.folder,
            self.rows_per_part,
            commit=write_pages_part,
            key_of=lambda row: f"{row.url}\x00{row.status}",
        )
