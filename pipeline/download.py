"""Fetch candidates' images and turn them into settled records, many at a time per worker.

Fetching is I/O-bound, so each worker runs a thread pool over batches of candidates; the
fetcher (with its per-domain limits, robots.txt cache and pinned connections) and the image
processor are built once per DoFn instance in `setup`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import apache_beam as beam

from lait.record import Record, Status
from pipeline.fetch import FetchConfig, Fetcher, FetchRejected
from pipeline.image import ImageProcessor
from pipeline.image.config import ImageConfig
from pipeline.progress import ProgressWriter


def download_one(fetcher: Fetcher, processor: ImageProcessor, record: Record) -> Record:
    """Fetch, decode, filter and resize one candidate; every failure is a reject reason."""
    if record.status is not Status.CANDIDATE:
        raise ValueError(f"record {record.key} is {record.status}; only candidates are fetched")
    try:
        response = fetcher.fetch(record.url, accept="image")
    except FetchRejected as rejection:
        return record.rejected(
            rejection.reason, rejection.detail, value=rejection.value, limit=rejection.limit
        )
    fetched = dataclasses.replace(record, image=response.body, num_bytes=len(response.body))
    return processor.process(fetched)


class DownloadImages(beam.DoFn):
    """Batches of candidates in, settled records out (accepted with pixels, or rejected)."""

    def __init__(
        self, fetch: FetchConfig, image: ImageConfig, threads: int, progress_folder: str | None
    ) -> None:
        self.fetch_config = fetch
        self.image_config = image
        self.threads = threads
        self.progress_folder = progress_folder

    def setup(self) -> None:
        self.fetcher = Fetcher(self.fetch_config)
        self.processor = ImageProcessor(self.image_config)
        self.pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="lait-fetch")
        self.progress = ProgressWriter(self.progress_folder) if self.progress_folder else None

    def process(self, batch: Sequence[Record]) -> Iterator[Record]:
        for record in self.pool.map(
            lambda record: download_one(self.fetcher, self.processor, record), batch
        ):
            if self.progress is not None:
                self.progress.add(ok=record.status is not Status.REJECTED)
            yield record

    def finish_bundle(self) -> None:
        if self.progress is not None:
            self.progress.flush()

    def teardown(self) -> None:
        self.pool.shutdown(wait=True)
        self.fetcher.close()


class Download(beam.PTransform):
    """Spread live candidates over workers, batch them, and download them; records already
    rejected by an earlier stage pass through unfetched."""

    def __init__(
        self,
        fetch: FetchConfig,
        image: ImageConfig,
        threads: int,
        progress_folder: str | None = None,
    ) -> None:
        super().__init__()
        self.fetch = fetch
        self.image = image
        self.threads = threads
        self.progress_folder = progress_folder

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        # Records an earlier stage rejected are not fetched: they pass straight through.
        live, settled = records | "LiveOrSettled" >> beam.Partition(LiveOrSettled(), 2)
        downloaded = (
            live
            | "Spread" >> beam.Reshuffle()
            | "Batch"
            >> beam.BatchElements(min_batch_size=4 * self.threads, max_batch_size=4 * self.threads)
            | "Fetch"
            >> beam.ParDo(
                DownloadImages(self.fetch, self.image, self.threads, self.progress_folder)
            )
        )
        return (downloaded, settled) | "Merge" >> beam.Flatten()


class LiveOrSettled(beam.PartitionFn):
    """Candidates still in play → 0; records already rejected → 1."""

    def partition_for(self, element: Any, num_partitions: int, *args: Any, **kwargs: Any) -> int:
        record: Record = element
        return 0 if record.status is Status.CANDIDATE else 1
