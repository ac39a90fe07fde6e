"""One typed config object per pipeline job, loaded from YAML and overridden by CLI flags.

    sources:   what to read (page URLs, WARC/WAT files, url+caption lists; any path may be a
               glob, and WARC/WAT a Common Crawl `*.paths.gz` manifest)
    text:      caption cleaning and text filters (`pipeline.text.TextFilterConfig`)
    language:  fastText language ID and the languages kept (`pipeline.langid.LanguageConfig`)
    fetch:     the safe fetcher's caps and policies (`pipeline.fetch.FetchConfig`)
    image:     decoding, filters and resizing
    clip:      CLIP model, scoring policy and threshold (`pipeline.clip.ClipConfig`)
    dedupe:    exact, perceptual, caption, semantic dedup, decontamination (`dedupe.DedupeConfig`)
    output:    the dataset folder and its shard size

Every default works offline. A YAML file mirrors the nesting:

    sources:
      pages: [https://example.com/gallery.html]
      lists: [{path: gs://bucket/cc.tsv, format: cc}]
    fetch: {total_timeout_s: 20, respect_robots_txt: true}
    image: {image_size: 384, min_side: 300}
    output: {folder: gs://bucket/lait/run1, samples_per_shard: 5000}
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from dedupe.config import DedupeConfig
from pipeline.clip import ClipConfig
from pipeline.fetch import FetchConfig
from pipeline.image.config import ImageConfig
from pipeline.langid import LanguageConfig
from pipeline.sources.matching import COMMON_CRAWL_PREFIX
from pipeline.text import TextFilterConfig

__all__ = [
    "ConfigError",
    "ImageConfig",
    "ListSource",
    "OutputConfig",
    "PipelineConfig",
    "SourcesConfig",
    "config_from_dict",
    "load_config",
    "parse_override",
]

ListFormat = Literal["cc", "sbu", "tsv", "csv", "jsonl", "parquet"]


class ConfigError(ValueError):
    """A config file or flag is wrong; the message says which and how to fix it."""


@dataclasses.dataclass(frozen=True)
class ListSource:
    """A url+caption list: Conceptual Captions TSV, SBU, or a table with named columns."""

    path: str
    format: ListFormat = "cc"
    name: str | None = None  # recorded as each record's `source`; default: the format
    url_column: str = "url"
    caption_column: str = "caption"
    captions_path: str | None = None  # SBU's second, line-aligned file of captions

    @property
    def source_name(self) -> str:
        """The `source` recorded on each record from this list."""
        return self.name or self.format


@dataclasses.dataclass(frozen=True)
class SourcesConfig:
    """What a job reads."""

    pages: tuple[str, ...] = ()
    warc: tuple[str, ...] = ()
    wat: tuple[str, ...] = ()
    lists: tuple[ListSource, ...] = ()
    depth: int = 0  # follow same-site links this many hops from each page URL
    # Where the relative lines of a Common Crawl `warc.paths.gz` / `wat.paths.gz` manifest
    # live; "s3://commoncrawl/" reads the same files from S3 (with AWS credentials).
    manifest_prefix: str = COMMON_CRAWL_PREFIX


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """Where and how the dataset folder is written."""

    folder: str = "out/dataset"
    samples_per_shard: int = 1000
    rejects_per_part: int = 50_000
    overwrite: bool = False
    # Refetch the candidates the folder's run rejected for transient reasons (timeouts,
    # connection errors, 5xx, 429) and move those that now pass into new shards
    # (`pipeline.retry`).
    retry_failed: bool = False


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything one `lait crawl` / `lait download` run needs, except Beam's own options."""

    sources: SourcesConfig = dataclasses.field(default_factory=SourcesConfig)
    text: TextFilterConfig = dataclasses.field(default_factory=TextFilterConfig)
    language: LanguageConfig = dataclasses.field(default_factory=LanguageConfig)
    fetch: FetchConfig = dataclasses.field(default_factory=FetchConfig)
    image: ImageConfig = dataclasses.field(default_factory=ImageConfig)
    clip: ClipConfig = dataclasses.field(default_factory=ClipConfig)
    dedupe: DedupeConfig = dataclasses.field(default_factory=DedupeConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)
    fetch_threads: int = 16  # concurrent fetches per worker process

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for stats.json provenance and YAML dumps."""
        return dataclasses.asdict(self)


def unfiltered(config: PipelineConfig) -> PipelineConfig:
    """`config` with every curation step off: the raw baseline a curated dataset is judged by.

    Text filters, the language filter, the CLIP threshold, best-caption-per-image and every
    dedupe stage are switched off; extraction, the safe fetch, image decoding and the image
    size checks stay (a raw dataset still holds only usable images). CLIP still scores every
    pair, so the raw dataset's parquet shows what the filters would have said.
    """
    return dataclasses.replace(
        config,
        text=dataclasses.replace(config.text, enabled=False),
        language=dataclasses.replace(config.language, languages={}),
        clip=dataclasses.replace(
            config.clip,
            policy="threshold",
            min_score=-1.0,
            min_score_by_language={},
            best_caption_per_image=False,
        ),
        dedupe=dataclasses.replace(
            config.dedupe, url=False, sha256=False, perceptual=False, caption=False, semantic=False
        ),
    )


def _build(cls: type[Any], values: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, checking names and simple types."""
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {
        name: _coerce(hints[name], value, f"{where}.{name}") for name, value in values.items()
    }
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from error


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)  # type: ignore[arg-type]
    if origin is tuple:
        items = [value] if isinstance(value, str | dict) else list(value or [])
        return tuple(_coerce(args[0], item, f"{where}[{i}]") for i, item in enumerate(items))
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where) if len(inner) == 1 else value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if hint is bool and isinstance(value, str):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: {value!r} is not a boolean")
    if hint in (int, float, str) and not isinstance(value, hint):
        try:
            return hint(value)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where}: {value!r} is not of type {hint.__name__}") from error
    return value


def config_from_dict(values: dict[str, Any]) -> PipelineConfig:
    """A checked `PipelineConfig` from nested plain values (as in YAML)."""
    config: PipelineConfig = _build(PipelineConfig, values, "config")
    return config


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Load YAML (if a path is given), then apply dotted overrides like {'fetch.retries': 3}."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read config {path}: {error}") from error
        values = loaded or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    for dotted, value in (overrides or {}).items():
        node = values
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted}: {part} is not a section")
        node[leaf] = value
    return config_from_dict(values)


def parse_override(text: str) -> tuple[str, Any]:
    """`section.option=value` (the value parsed as YAML, so 3, true and [a, b] work)."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise ConfigError(f"--set {text!r}: expected SECTION.OPTION=VALUE, e.g. fetch.retries=3")
    return name.strip(), yaml.safe_load(raw)
