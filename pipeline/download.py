"""Fetch each distinct image URL once, resize it, stage its bytes, and give every caption of
that URL the same image.

    live records ─ url ─► Distinct ─► by (host, split) ─► GroupIntoBatches ─► fetch + resize
        │                                                                       + stage bytes
        │                                                                            │
        └──────────────── JoinOne on url (hot URLs salted) ◄── FetchedImage ────────┘

- **One fetch per URL**: a logo on a million pages, or one image under three captions, is
  downloaded once (`Distinct` is a combiner, so a hot URL costs nothing extra).
- **Job-wide politeness**: fetches are keyed by (host, one of `fetch.max_workers_per_host`
  splits) and each split is fetched by one DoFn call, a batch at a time, so at most that
  many workers talk to one host in the whole job, however many run; each `Fetcher` then
  holds its own per-host concurrency and rate within a batch. robots.txt is fetched once
  per origin by a pre-pass and its text joined into the host's splits. (`GroupIntoBatches` would do
  the same with state and timers; the local FnApiRunner leaves its timer bundles unrun.)
- **Bounded work per host**: a host's image URLs past `fetch.max_fetches_per_host` (chosen
  by URL hash) and those left when its splits have spent `fetch.max_seconds_per_host`
  become `OVER_HOST_BUDGET` outcomes, never requested (`pipeline.host_budget`).
- **Pixels off the shuffle**: the resized bytes go to a staging file (`pipeline.staging`)
  and what comes back is `FetchedImage` metadata with a reference, so the join and every
  later selection move metadata only.

The fetcher and the image processor are built once per DoFn instance in `setup`; fetching
is I/O-bound, so each instance runs a thread pool over its batch.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from typing import Any

import apache_beam as beam

from dedupe.keep_best import DEFAULT_HOT_CAP, JoinOne, salt_of
from lait.record import CaptionSource, Record, RejectReason, Status, face_boxes_of
from pipeline.fetch import FetchConfig, Fetcher, FetchRejected
from pipeline.fetch.metrics import FetchMetrics
from pipeline.fetch.robots import robots_url_of
from pipeline.fetch.urls import politeness_key
from pipeline.host_budget import HostFetchBudget, SplitClock, over_fetch_budget_detail
from pipeline.image import ImageProcessor
from pipeline.image.config import ImageConfig
from pipeline.outcomes import NAMESPACE
from pipeline.progress import ProgressWriter
from pipeline.staging import (
    REFETCH_TRANSIENT_KEY,
    commit_outcomes,
    outcome_files,
    read_outcome_lines,
    read_staging_job,
    stage_images,
)
from pipeline.transient import is_transient_failure

_URL, _ROBOTS = "url", "robots"  # the two kinds of member of a host split's group

# What a fetch learns about an image, copied onto every record of its URL.
IMAGE_FIELDS: tuple[str, ...] = (
    "image_format",
    "width",
    "height",
    "original_width",
    "original_height",
    "num_bytes",
    "sha256",
    "phash",
    "exif",
    "face_boxes",
    "image_ref",
    "colour_thumbnail",
)


@dataclasses.dataclass(frozen=True)
class DownloadSettings:
    """What the download stage needs: the fetcher's and image processor's configs, fetch
    threads per worker, where to stage images, where the local progress bar reads, and
    whether dedupe's colour thumbnails are wanted."""

    fetch: FetchConfig
    image: ImageConfig
    threads: int
    staging: str
    progress_folder: str | None = None
    # Dedupe's colour check needs each image's thumbnails; without perceptual dedupe they are
    # not computed.
    colour_thumbnails: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class FetchedImage:
    """The outcome of fetching one URL: its image fields (with a staging reference when it
    was kept), or the reason it was refused."""

    url: str
    fields: tuple[tuple[str, Any], ...] = ()
    reject_reason: RejectReason | None = None
    reject_detail: str | None = None
    reject_value: float | None = None
    reject_limit: float | None = None

    def to_json(self) -> str:
        """One line of a fetch batch's outcome file (`pipeline.staging.commit_outcomes`)."""
        return json.dumps(
            {
                "url": self.url,
                "fields": {
                    name: value.hex() if isinstance(value, bytes) else value
                    for name, value in self.fields
                },
                "reject_reason": self.reject_reason.value if self.reject_reason else None,
                "reject_detail": self.reject_detail,
                "reject_value": self.reject_value,
                "reject_limit": self.reject_limit,
            },
            ensure_ascii=False,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, line: str) -> FetchedImage:
        """The outcome a `to_json` line holds."""
        data = json.loads(line)
        reason = data["reject_reason"]
        return cls(
            url=data["url"],
            fields=tuple(
                (name, _field_from_json(name, data["fields"].get(name))) for name in IMAGE_FIELDS
            ),
            reject_reason=RejectReason(reason) if reason else None,
            reject_detail=data["reject_detail"],
            reject_value=data["reject_value"],
            reject_limit=data["reject_limit"],
        )

    def apply(self, record: Record) -> Record:
        """`record` (a live candidate with this URL) with this outcome."""
        with_image = dataclasses.replace(record, **dict(self.fields)) if self.fields else record
        if self.reject_reason is None:
            return with_image
        return with_image.rejected(
            self.reject_reason,
            self.reject_detail,
            value=self.reject_value,
            limit=self.reject_limit,
        )


def _field_from_json(name: str, value: Any) -> Any:
    if name == "face_boxes":
        return face_boxes_of(value)  # JSON lists back to the record's tuples
    return bytes.fromhex(value) if name == "colour_thumbnail" and value is not None else value


def _fields_of(record: Record) -> tuple[tuple[str, Any], ...]:
    return tuple((name, getattr(record, name)) for name in IMAGE_FIELDS)


def fetch_and_resize(fetcher: Fetcher, processor: ImageProcessor, url: str) -> Record:
    """Fetch, decode, filter and resize one URL, as a record of its own (the image's fields,
    or a reject reason); the captions join it later."""
    probe = Record(key=url, source="fetch", url=url, caption="", caption_source=CaptionSource.LIST)
    try:
        response = fetcher.fetch(url, accept="image")
    except FetchRejected as rejection:
        return probe.rejected(
            rejection.reason, rejection.detail, value=rejection.value, limit=rejection.limit
        )
    fetched = dataclasses.replace(probe, image=response.body, num_bytes=len(response.body))
    return processor.process(fetched)


class FetchImages(beam.DoFn):
    """((host, split), URLs) in; one `FetchedImage` per URL out, the kept images' bytes staged
    in one file per batch of `4 x threads` URLs. Up to `2 x threads` URLs are in flight at
    once, refilled as each finishes (no thread waits for its batch's slowest fetch)."""

    def __init__(self, settings: DownloadSettings) -> None:
        self.settings = settings
        self.batch_size = 4 * settings.threads
        # URLs in flight on the pool: a finished fetch is replaced at once, so the threads
        # stay busy across batches (a batch is only the unit staged and committed together).
        self.window = 2 * settings.threads
        self.staging = settings.staging
        self.splits = settings.fetch.max_workers_per_host

    def setup(self) -> None:
        settings = self.settings
        self.fetcher = Fetcher(settings.fetch)
        # Dedupe's colour check needs the pixels, which are at hand only here.
        self.processor = ImageProcessor(
            settings.image, colour_thumbnails=settings.colour_thumbnails
        )
        self.pool = ThreadPoolExecutor(
            max_workers=settings.threads, thread_name_prefix="lait-fetch"
        )
        folder = settings.progress_folder
        self.progress = ProgressWriter(folder) if folder else None
        self.fetch_metrics = FetchMetrics()
        self.urls = beam.metrics.Metrics.counter(NAMESPACE, "download.urls")
        self.staged_bytes = beam.metrics.Metrics.counter(NAMESPACE, "download.staged_bytes")
        self.over_time = beam.metrics.Metrics.counter(NAMESPACE, "download.over_host_time")

    def process(self, element: tuple[Any, Iterable[tuple[str, Any]]]) -> Iterator[FetchedImage]:
        # A host split's group holds its URLs and, when robots.txt is honoured, the rules of
        # the host's origins from the job's pre-pass: read those first (a group can be read
        # twice), then fetch the URLs a batch at a time, so memory holds one batch whatever
        # the host's size.
        members = element[1]
        for tag, value in members:
            if tag == _ROBOTS:
                self.fetcher.prime_robots_txt(*value)
        clock = SplitClock(self.settings.fetch.max_seconds_per_host, self.splits)
        done: list[Record] = []  # each one's `url` is the URL it was fetched for
        in_flight: set[Future[Record]] = set()
        for tag, url in members:
            if tag != _URL:
                continue
            if clock.spent():
                # The split's share of its host's time budget is spent: not fetched, committed
                # as an OVER_HOST_BUDGET outcome.
                done.append(_over_time(url, clock))
                self.over_time.inc()
            else:
                clock.start()
                if len(in_flight) >= self.window:
                    finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    done.extend(future.result() for future in finished)
                in_flight.add(self.pool.submit(self._fetch_one, url))
            while len(done) >= self.batch_size:
                yield from self.commit_batch(done[: self.batch_size])
                del done[: self.batch_size]
        done.extend(future.result() for future in as_completed(in_flight))
        for start in range(0, len(done), self.batch_size):
            yield from self.commit_batch(done[start : start + self.batch_size])
        self.fetch_metrics.publish(self.fetcher)  # requests, DNS lookups, robots.txt fetches

    def _fetch_one(self, url: str) -> Record:
        return fetch_and_resize(self.fetcher, self.processor, url)

    def commit_batch(self, results: list[Record]) -> Iterator[FetchedImage]:
        """Stage a batch's kept images in one file, then commit the batch's outcomes (its
        completion marker: a rerun does not fetch these URLs again) and emit them."""
        kept = [r for r in results if r.status is not Status.REJECTED and r.image is not None]
        refs = iter(stage_images(self.staging, [r.image for r in kept if r.image is not None]))
        self.urls.inc(len(results))
        self.staged_bytes.inc(sum(len(r.image or b"") for r in kept))
        outcomes = []
        for result in results:
            url = result.url
            if self.progress is not None:
                self.progress.add(ok=result.status is not Status.REJECTED)
            if result.status is Status.REJECTED:
                outcomes.append(
                    FetchedImage(
                        url,
                        _fields_of(result),
                        result.reject_reason,
                        result.reject_detail,
                        result.reject_value,
                        result.reject_limit,
                    )
                )
            else:
                staged = dataclasses.replace(result, image=None, image_ref=next(refs))
                outcomes.append(FetchedImage(url, _fields_of(staged)))
        commit_outcomes(self.staging, [outcome.to_json() for outcome in outcomes])
        yield from outcomes

    def finish_bundle(self) -> None:
        if self.progress is not None:
            self.progress.flush()

    def teardown(self) -> None:
        self.pool.shutdown(wait=True)
        self.fetcher.close()


def _over_time(url: str, clock: SplitClock) -> Record:
    probe = Record(key=url, source="fetch", url=url, caption="", caption_source=CaptionSource.LIST)
    return probe.rejected(
        RejectReason.OVER_HOST_BUDGET,
        f"this host split spent its share of fetch.max_seconds_per_host ({clock.share:.0f} s)",
        limit=clock.share,
    )


def _over_fetch_budget(url: str, budget: int) -> FetchedImage:
    reason, detail, limit = over_fetch_budget_detail(url, budget)
    return FetchedImage(url, reject_reason=reason, reject_detail=detail, reject_limit=limit)


class FetchDistinctUrls(beam.PTransform):
    """Distinct image URLs → one `FetchedImage` each, fetched politely job-wide."""

    def __init__(self, settings: DownloadSettings) -> None:
        super().__init__()
        self.settings = settings

    def expand(self, urls: beam.PCollection) -> beam.PCollection:
        fetch = self.settings.fetch
        splits = fetch.max_workers_per_host
        parts = [
            urls
            | "ByHostSplit"
            >> beam.Map(lambda url: ((politeness_key(url), salt_of(url, splits)), (_URL, url)))
        ]
        if fetch.respect_robots_txt:
            # robots.txt once per origin for the whole job, its rules copied to each split of
            # the host (a few copies per host, never one per URL).
            parts.append(
                urls
                | "RobotsPrepass" >> RobotsOncePerOrigin(fetch)
                | "ToSplits"
                >> beam.FlatMap(
                    lambda kv: (
                        ((politeness_key(kv[0]), split), (_ROBOTS, kv)) for split in range(splits)
                    )
                )
            )
        return (
            parts
            | "WithRobots" >> beam.Flatten()
            | "HostSplits" >> beam.GroupByKey()
            | "Fetch" >> beam.ParDo(FetchImages(self.settings))
        )


class FetchRobotsTxt(beam.DoFn):
    """robots.txt URLs in; (robots.txt URL, its text or None) out, fetched safely."""

    def __init__(self, fetch: FetchConfig) -> None:
        self.fetch_config = fetch

    def setup(self) -> None:
        self.fetcher = Fetcher(self.fetch_config)
        self.fetch_metrics = FetchMetrics()

    def process(self, robots_url: str) -> Iterator[tuple[str, str | None]]:
        yield robots_url, self.fetcher.robots_txt(robots_url)
        self.fetch_metrics.publish(self.fetcher)

    def teardown(self) -> None:
        self.fetcher.close()


class RobotsOncePerOrigin(beam.PTransform):
    """Image URLs → (robots.txt URL, text) for each distinct origin among them: the job's
    pre-pass, so a host's robots.txt is requested once however many workers fetch from it."""

    def __init__(self, fetch: FetchConfig) -> None:
        super().__init__()
        self.fetch = fetch

    def expand(self, urls: beam.PCollection) -> beam.PCollection:
        return (
            urls
            | "Origins" >> beam.FlatMap(lambda url: [r] if (r := robots_url_of(url)) else [])
            | "Distinct" >> beam.Distinct()
            | "Spread" >> beam.Reshuffle()
            | "Fetch" >> beam.ParDo(FetchRobotsTxt(self.fetch))
        )


class Download(beam.PTransform):
    """Records in, records out: each distinct URL of the live candidates is fetched once and
    its outcome (image fields and staging reference, or the fetch's reject reason) given to
    every candidate with that URL; records already settled pass through unfetched."""

    def __init__(self, settings: DownloadSettings, hot_cap: int = DEFAULT_HOT_CAP) -> None:
        super().__init__()
        self.settings = settings
        self.hot_cap = hot_cap

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        live, settled = records | "LiveOrSettled" >> beam.Partition(LiveOrSettled(), 2)
        distinct = live | "Urls" >> beam.Map(lambda r: r.url) | "Distinct" >> beam.Distinct()
        # Each host's fetch budget, over all the job's URLs (fetched before a kill or not).
        budget = self.settings.fetch.max_fetches_per_host
        budgeted = distinct | "HostBudget" >> HostFetchBudget(budget)
        urls = budgeted["within"]
        over_budget = budgeted["over"] | "OverBudget" >> beam.Map(
            _over_fetch_budget, budget=budget or 0
        )
        # A rerun of a killed job: URLs a committed fetch batch answered are not fetched again.
        known = {
            "many": urls | "UrlByUrl" >> beam.Map(lambda url: (url, url)),
            "one": records.pipeline | "StagedOutcomes" >> StagedOutcomes(self.settings.staging),
        } | "Known" >> JoinOne(lambda url, known: [(url, known)], member_id=str)
        todo, done = known | "FetchedBefore" >> beam.Partition(_NewOrKnown(), 2)
        fetched = todo | "ToFetch" >> beam.Keys() | "FetchUrls" >> FetchDistinctUrls(self.settings)
        outcomes = (
            fetched,
            done | "Reused" >> beam.Values(),
            over_budget,
        ) | "Outcomes" >> beam.Flatten()
        joined = {
            "many": live | "ByUrl" >> beam.Map(lambda r: (r.url, r)),
            "one": outcomes | "OutcomeByUrl" >> beam.Map(lambda f: (f.url, f)),
        } | "GiveImages" >> JoinOne(_with_image, member_id=_member_id, hot_cap=self.hot_cap)
        return (joined, settled) | "Merge" >> beam.Flatten()


class StagedOutcomes(beam.PTransform):
    """(url, FetchedImage) for every URL the committed batches of an earlier, killed run of
    this job answered (none on a fresh run). The outcome files are listed once and read in
    parallel; a URL answered twice (a retried bundle) keeps one outcome.

    When the staging folder's job says so (`--retry-failed` on a killed run), outcomes that
    were transient failures are left out, so those URLs are fetched again."""

    def __init__(self, staging: str) -> None:
        super().__init__()
        self.staging = staging
        job = read_staging_job(staging) or {}
        self.refetch_transient = bool(job.get(REFETCH_TRANSIENT_KEY))

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        outcomes = (
            pipeline
            | "Folder" >> beam.Create([self.staging])
            | "List" >> beam.FlatMap(outcome_files)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.FlatMap(read_outcome_lines)
            | "Parse" >> beam.Map(FetchedImage.from_json)
        )
        if self.refetch_transient:
            outcomes = outcomes | "NotTransient" >> beam.Filter(
                lambda f: not is_transient_failure(f.reject_reason, f.reject_detail)
            )
        return (
            outcomes
            | "ByUrl" >> beam.Map(lambda f: (f.url, f))
            | "OnePerUrl" >> beam.CombinePerKey(_first_outcome)
        )


def _first_outcome(outcomes: Iterable[FetchedImage]) -> FetchedImage:
    # Any outcome of a URL would do; the smallest line makes reruns agree. A URL fetched
    # again by `--retry-failed` keeps its lasting outcome over the transient failure.
    return min(
        outcomes,
        key=lambda f: (is_transient_failure(f.reject_reason, f.reject_detail), f.to_json()),
    )


def _member_id(record: Record) -> str:
    return record.sighting_id or record.key


def _with_image(record: Record, fetched: FetchedImage | None) -> Sequence[Record]:
    if fetched is None:  # every distinct URL is fetched; a missing one is a bug
        raise ValueError(f"no fetch outcome for {record.url} (record {record.key})")
    return [fetched.apply(record)]


class _NewOrKnown(beam.PartitionFn):
    """(url, None) → 0 (to fetch); (url, FetchedImage) → 1 (fetched by an earlier run)."""

    def partition_for(self, element: Any, num_partitions: int, *args: Any, **kwargs: Any) -> int:
        return 0 if element[1] is None else 1


class LiveOrSettled(beam.PartitionFn):
    """Candidates still in play → 0; records already rejected → 1."""

    def partition_for(self, element: Any, num_partitions: int, *args: Any, **kwargs: Any) -> int:
        record: Record = element
        return 0 if record.status is Status.CANDIDATE else 1
