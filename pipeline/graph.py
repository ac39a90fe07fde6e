"""The LAIT pipeline graph, cheap stages first:

    sources → candidates → unique keys → text filters → language ID → download + resize
            → CLIP score → best caption per image → dedupe → settle → write

One graph for every runner: DirectRunner here, DataflowRunner at scale.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam

from dedupe import Deduplicate
from lait.record import Record, RejectReason
from pipeline.clip import BestCaptionPerImage, ClipScore
from pipeline.config import PipelineConfig
from pipeline.crawl import CrawlPages
from pipeline.download import Download, LiveOrSettled
from pipeline.langid import LanguageFilter
from pipeline.outcomes import CountOutcome
from pipeline.read_sources import ReadLists, ReadWarcPages, ReadWatCandidates
from pipeline.text import TextFilters
from pipeline.write import WriteDataset


def keep_first_of_key(element: tuple[str, Iterable[Record]]) -> Iterator[Record]:
    """One live candidate per key (same url + caption); the rest are rejected duplicates.

    The survivor is the one found first in a stable order (page URL, then source), so
    reruns agree; the others point at it with `duplicate_of`.
    """
    key, records = element
    ordered = sorted(records, key=lambda r: (r.page_url or "", r.source))
    yield ordered[0]
    for duplicate in ordered[1:]:
        yield duplicate.rejected(
            RejectReason.DUPLICATE_URL_CAPTION,
            f"same url and caption as on {ordered[0].page_url or ordered[0].source}",
            duplicate_of=key,
        )


class Candidates(beam.PTransform):
    """Every source in the config, as one PCollection of candidate records."""

    def __init__(self, config: PipelineConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        sources = self.config.sources
        parts = []
        if sources.pages:
            parts.append(
                pipeline
                | "PageUrls" >> beam.Create(sorted(sources.pages))
                | "Crawl" >> CrawlPages(self.config.fetch, sources.depth)
            )
        if sources.warc:
            parts.append(pipeline | "Warc" >> ReadWarcPages(sources.warc))
        if sources.wat:
            parts.append(pipeline | "Wat" >> ReadWatCandidates(sources.wat))
        if sources.lists:
            parts.append(pipeline | "Lists" >> ReadLists(sources.lists))
        if not parts:
            raise ValueError(
                "nothing to read: give page URLs, WARC/WAT files or url+caption lists "
                "(see `lait crawl --help` and `lait download --help`)"
            )
        return parts | "AllCandidates" >> beam.Flatten()


class BuildDataset(beam.PTransform):
    """The whole job from a pipeline root; returns the written files' row counts."""

    def __init__(self, config: PipelineConfig, progress_folder: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.progress_folder = progress_folder

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        config = self.config
        candidates = pipeline | "Candidates" >> Candidates(config)
        live, settled_early = candidates | "LiveOrSettled" >> beam.Partition(LiveOrSettled(), 2)
        unique, duplicates = (
            live
            | "ByKey" >> beam.Map(lambda r: (r.key, r))
            | "GroupKeys" >> beam.GroupByKey()
            | "FirstOfKey" >> beam.FlatMap(keep_first_of_key)
            | "SplitDuplicates" >> beam.Partition(LiveOrSettled(), 2)
        )
        if config.text.enabled:
            unique = unique | "TextFilters" >> TextFilters(config.text)
        scored = (
            unique
            | "Language" >> LanguageFilter(config.language)
            | "Download"
            >> Download(config.fetch, config.image, config.fetch_threads, self.progress_folder)
        )
        if config.clip.enabled:
            scored = scored | "ClipScore" >> ClipScore(config.clip)
        if config.clip.enabled and config.clip.best_caption_per_image:
            scored = scored | "BestCaption" >> BestCaptionPerImage()
        kept = scored | "Dedupe" >> Deduplicate(config.dedupe)
        settled = (
            (settled_early, duplicates, kept | "Settle" >> beam.Map(Record.accepted_if_live))
            | "AllSettled" >> beam.Flatten()
            | "Count" >> beam.ParDo(CountOutcome())
        )
        return settled | "Write" >> WriteDataset(
            config.output.folder, config.output.samples_per_shard, config.output.rejects_per_part
        )
