"""The LAIT pipeline graph, cheap stages first:

    sources (page rows → pages ledger) → candidates → one per key → text filters → language ID
            → one fetch + resize per distinct URL (bytes staged) → CLIP score
            → best caption per image → dedupe → settle → write (bytes read back)

Every per-key choice is a combiner and a salted join (`dedupe.keep_best`), and the image
bytes cross no shuffle: they wait in staging files (`pipeline.staging`) while selection runs
on metadata, and the shard writer reads them back.

One graph for every runner: DirectRunner here, DataflowRunner at scale.
"""

from __future__ import annotations

import apache_beam as beam

from dedupe import Deduplicate
from dedupe.keep_best import KeepBestPerKey
from lait.record import Record, RejectReason, Status
from pipeline.clip import BestCaptionPerImage, ClipScore, ClipScoreWithEmbeddings
from pipeline.config import PipelineConfig
from pipeline.crawl import Crawl
from pipeline.download import Download, DownloadSettings, LiveOrSettled
from pipeline.extract.page_policy import PagePolicy
from pipeline.langid import LanguageFilter
from pipeline.outcomes import CountOutcome
from pipeline.pages import WritePages
from pipeline.read_sources import ReadLists, ReadWarcPages, ReadWatCandidates
from pipeline.staging import staging_folder
from pipeline.text import TextFilters
from pipeline.write import WriteDataset


def _first_sighting(record: Record) -> tuple[str, str]:
    # A stable order (page URL, then source), so reruns keep the same sighting.
    return (record.page_url or "", record.source)


def _same_key(record: Record, first: tuple[str, str], _: str) -> Record:
    page, source = first
    return record.rejected(
        RejectReason.DUPLICATE_URL_CAPTION,
        f"same url and caption as on {page or source}",
        duplicate_of=record.key,
    )


class OnePerKey(beam.PTransform):
    """One live candidate per key (same url + caption); the rest are rejected duplicates
    pointing at it. A combiner picks the first sighting, so a favicon with the same alt on
    every page of a site is never one sorted group."""

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return records | "FirstSighting" >> KeepBestPerKey(
            key_of=lambda r: r.key if r.status is Status.CANDIDATE else None,
            rank_of=_first_sighting,
            id_of=lambda r: r.sighting_id or r.key,
            lose=_same_key,
        )


class Candidates(beam.PTransform):
    """Every source in the config, as {"candidates": one PCollection of candidate records,
    "pages": the crawl's `PageRow`s (empty without page URLs)}."""

    def __init__(self, config: PipelineConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, pipeline: beam.Pipeline) -> dict[str, beam.PCollection]:
        sources = self.config.sources
        policy = PagePolicy.of(self.config.fetch)
        parts = []
        pages = []
        if sources.pages:
            crawled = (
                pipeline
                | "PageUrls" >> beam.Create(sorted(sources.pages))
                | "Crawl" >> Crawl(self.config.fetch, sources.depth)
            )
            parts.append(crawled["candidates"])
            pages.append(crawled["pages"])
        if sources.warc:
            parts.append(
                pipeline
                | "Warc"
                >> ReadWarcPages(
                    sources.warc, manifest_prefix=sources.manifest_prefix, policy=policy
                )
            )
        if sources.wat:
            parts.append(
                pipeline
                | "Wat"
                >> ReadWatCandidates(
                    sources.wat, manifest_prefix=sources.manifest_prefix, policy=policy
                )
            )
        if sources.lists:
            parts.append(
                pipeline
                | "Lists" >> ReadLists(sources.lists, manifest_prefix=sources.manifest_prefix)
            )
        if not parts:
            raise ValueError(
                "nothing to read: give page URLs, WARC/WAT files or url+caption lists "
                "(see `lait crawl --help` and `lait download --help`)"
            )
        if not pages:
            pages.append(pipeline | "NoPages" >> beam.Create([]))
        return {
            "candidates": parts | "AllCandidates" >> beam.Flatten(),
            "pages": pages | "AllPages" >> beam.Flatten(),
        }


class BuildDataset(beam.PTransform):
    """The whole job from a pipeline root; returns the written files' row counts."""

    def __init__(self, config: PipelineConfig, progress_folder: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.progress_folder = progress_folder

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        config = self.config
        read = pipeline | "Candidates" >> Candidates(config)
        candidates = read["candidates"]
        if config.sources.pages:
            _ = read["pages"] | "Pages" >> WritePages(
                config.output.folder, config.output.rejects_per_part
            )
        live, settled_early = (
            candidates
            | "OnePerKey" >> OnePerKey()
            | "LiveOrSettled" >> beam.Partition(LiveOrSettled(), 2)
        )
        unique = live
        if config.text.enabled:
            unique = unique | "TextFilters" >> TextFilters(config.text)
        scored = (
            unique
            | "Language" >> LanguageFilter(config.language)
            | "Download"
            >> Download(
                DownloadSettings(
                    config.fetch,
                    config.image,
                    config.fetch_threads,
                    staging_folder(config.output.folder),
                    self.progress_folder,
                    colour_thumbnails=config.dedupe.perceptual,
                )
            )
        )
        embeddings = None
        if config.clip.enabled and config.dedupe.semantic:
            outputs = scored | "ClipScore" >> ClipScoreWithEmbeddings(config.clip)
            scored = outputs["records"]
            embeddings = outputs["embeddings"] | "ImageEmbeddings" >> beam.MapTuple(
                lambda key, image, _text: (key, image)
            )
        elif config.clip.enabled:
            scored = scored | "ClipScore" >> ClipScore(config.clip)
        if config.clip.enabled and config.clip.best_caption_per_image:
            scored = scored | "BestCaption" >> BestCaptionPerImage()
        kept = scored | "Dedupe" >> Deduplicate(config.dedupe, embeddings=embeddings)
        settled = (
            (settled_early, kept | "Settle" >> beam.Map(Record.accepted_if_live))
            | "AllSettled" >> beam.Flatten()
            | "Count" >> beam.ParDo(CountOutcome())
        )
        return settled | "Write" >> WriteDataset(
            config.output.folder, config.output.samples_per_shard, config.output.rejects_per_part
        )
