"""The url+caption lists the demo web serves, in the formats the real datasets ship.

- Conceptual Captions: one TSV file, `caption<TAB>url` per line, no header
  (as `Train_GCC-training.tsv`).
- SBU Captioned Photos: two line-aligned text files, one URL per line and one caption per
  line (as `SBU_captioned_photo_dataset_urls.txt` and `..._captions.txt`).

URLs are written as "{BASE}/path"; the server replaces "{BASE}" with its base URL.
"""

from __future__ import annotations

from collections.abc import Sequence

from lait.demo_web.ground_truth import BASE_PLACEHOLDER


def _clean(text: str) -> str:
    # A caption may never break the line-oriented formats.
    return " ".join(text.split())


def format_cc_tsv(rows: Sequence[tuple[str, str]]) -> bytes:
    """Conceptual Captions TSV for (caption, site path) rows, URLs as "{BASE}/path"."""
    return "".join(
        f"{_clean(caption)}\t{BASE_PLACEHOLDER}{path}\n" for caption, path in rows
    ).encode()


def format_sbu_files(rows: Sequence[tuple[str, str]]) -> tuple[bytes, bytes]:
    """SBU's (urls, captions) files for (caption, site path) rows, line-aligned."""
    urls = "".join(f"{BASE_PLACEHOLDER}{path}\n" for _, path in rows)
    captions = "".join(f"{_clean(caption)}\n" for caption, _ in rows)
    return urls.encode(), captions.encode()
