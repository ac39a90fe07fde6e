"""LAIT: a clean, audited image-text pre-training corpus from the web, and a staged
ImageBERT-style pre-trainer for it."""

import os

# albumentations (imported by img2dataset) checks PyPI for updates on import; LAIT runs
# offline by default, so switch that off unless the user asked for it.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
