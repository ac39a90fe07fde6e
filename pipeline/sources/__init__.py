"""Sources of candidates: url+caption lists and web archives (pure Python, no Beam)."""

from pipeline.sources.lists import (
    list_record,
    malformed_row,
    read_conceptual_captions,
    read_csv,
    read_jsonl,
    read_parquet,
    read_sbu,
    read_sbu_tsv,
    read_tsv_pairs,
    read_url_caption_table,
    table_format,
)
from pipeline.sources.streams import SourceFormatError, SourceInput, open_source, source_name
from pipeline.sources.warc import WarcPage, WarcReadError, iter_warc_pages, iter_wat_candidates

__all__ = [
    "SourceFormatError",
    "SourceInput",
    "WarcPage",
    "WarcReadError",
    "iter_warc_pages",
    "iter_wat_candidates",
    "list_record",
    "malformed_row",
    "open_source",
    "read_conceptual_captions",
    "read_csv",
    "read_jsonl",
    "read_parquet",
    "read_sbu",
    "read_sbu_tsv",
    "read_tsv_pairs",
    "read_url_caption_table",
    "source_name",
    "table_format",
]
