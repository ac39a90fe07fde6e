"""Candidate extraction: image-text pairs and links from HTML pages (pure Python, no Beam)."""

from lait.urls import InvalidUrlError, canonical_url, resolve_http_url
from pipeline.extract.candidates import ImageSighting, records_for_page, records_for_sighting
from pipeline.extract.charset import decode_html
from pipeline.extract.html import PageExtraction, extract_candidates, extract_links, extract_page
from pipeline.extract.srcset import largest_srcset_url, parse_srcset

__all__ = [
    "ImageSighting",
    "InvalidUrlError",
    "PageExtraction",
    "canonical_url",
    "decode_html",
    "extract_candidates",
    "extract_links",
    "extract_page",
    "largest_srcset_url",
    "parse_srcset",
    "records_for_page",
    "records_for_sighting",
    "resolve_http_url",
]
