"""Load LAIT's ImageBERT checkpoints the Hugging Face way: Auto classes, remote code, one loader.

`import pretrain` calls `register()`, after which

    AutoConfig.from_pretrained(final)                # ImageBertConfig
    AutoModel.from_pretrained(final)                 # ImageBertModel (the encoder)
    AutoModelForPreTraining.from_pretrained(final)   # ImageBertForPreTraining (encoder + heads)
    AutoTokenizer.from_pretrained(final)             # the WordPiece tokenizer trained with

open any `save_pretrained` folder, such as a trainer stage's `NN-name/final/`. AutoModel on a
pre-training checkpoint takes its `imagebert.*` weights (the encoder) and leaves the heads.

`register()` also marks the classes for `save_pretrained` to copy `config.py` and `model.py`
into the folder and to write `auto_map` in `config.json` (`pretrain.config.AUTO_MAP`), so a
process that never imports `pretrain` loads the folder with `trust_remote_code=True`. The copied
`model.py` imports `pretrain.*` by absolute name: the folder needs this package installed, and
then runs the code of the installed version beside the copied one.

A model alone does not run: it needs its captions tokenised and its images turned into regions
as in training. `load_for_inference(final)` returns all three from the folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoTokenizer

from pretrain.config import ImageBertConfig
from pretrain.model import ImageBertForPreTraining, ImageBertModel

if TYPE_CHECKING:
    from pretrain.regions.base import RegionSource

REGIONS_FILE = "regions.json"  # the region source's spec, written by the trainer beside the model


class IncompleteCheckpointError(FileNotFoundError):
    """A folder lacks a file that inference needs (the message names it and what to do)."""


class InferenceParts(NamedTuple):
    """What running a checkpoint needs: the model, its tokenizer and its region source."""

    model: ImageBertForPreTraining | ImageBertModel
    tokenizer: Any
    region_source: RegionSource


def register() -> None:
    """Register ImageBERT with transformers' Auto classes and mark it for remote-code saves.

    Idempotent (`import pretrain` calls it; calling again changes nothing).
    """
    from transformers import BertTokenizer

    AutoConfig.register(ImageBertConfig.model_type, ImageBertConfig, exist_ok=True)
    AutoModel.register(ImageBertConfig, ImageBertModel, exist_ok=True)
    AutoModelForPreTraining.register(ImageBertConfig, ImageBertForPreTraining, exist_ok=True)
    # For folders whose tokenizer_config.json names no class; ours (trainer-saved) name one.
    AutoTokenizer.register(ImageBertConfig, tokenizer_class=BertTokenizer, exist_ok=True)
    ImageBertConfig.register_for_auto_class("AutoConfig")
    ImageBertModel.register_for_auto_class("AutoModel")
    ImageBertForPreTraining.register_for_auto_class("AutoModelForPreTraining")


def load_for_inference(
    folder: str | os.PathLike[str],
    *,
    encoder_only: bool = False,
    device: str = "cpu",
    region_source: RegionSource | None = None,
) -> InferenceParts:
    """The model (in eval mode, on `device`), tokenizer and region source saved in `folder`.

    `folder` is a `save_pretrained` folder with the tokenizer files and `regions.json`, as the
    trainer writes each stage's `final/`. The model is `ImageBertForPreTraining` (with the ITM
    and ITC heads that retrieval scores with), or the bare `ImageBertModel` if `encoder_only`.
    The region source is rebuilt from `regions.json` (a clip-grid source loads its CLIP) unless
    one is given.

        model, tokenizer, regions = load_for_inference("out/demo/pretrain/02-cc_sbu/final")
    """
    path = Path(folder)
    for name, why in (
        ("config.json", "it is not a save_pretrained folder"),
        ("tokenizer_config.json", "save the tokenizer there (tokenizer.save_pretrained)"),
        (REGIONS_FILE, "write the region source's spec() there, or pass region_source"),
    ):
        if name == REGIONS_FILE and region_source is not None:
            continue
        if not (path / name).exists():
            raise IncompleteCheckpointError(f"{path} has no {name}: {why}")
    auto = AutoModel if encoder_only else AutoModelForPreTraining
    model = auto.from_pretrained(str(path))
    model.to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if region_source is None:
        region_source = _region_source(path, device)
    return InferenceParts(model, tokenizer, region_source)


def _region_source(folder: Path, device: str) -> RegionSource:
    # The evaluator rebuilds region sources from their specs; imported here so that
    # `import pretrain` does not pull in the data loading.
    from pretrain.evaluate import region_source_for

    return region_source_for(folder, device)
