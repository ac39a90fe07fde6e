"""README.md: the folder's dataset card, so Hugging Face `datasets` loads it as it is meant.

Without a card, `datasets.load_dataset(DIR)` picks the builder of the most common file type:
json (the shards' NNNNN_stats.json beside stats.json and sizes.json), which fails on files of
different schemas, or parquet where ledger parts outnumber them, which mixes accepted and
rejected metadata with no images; and the webdataset builder infers the types of KEY.json
from the first samples, so a field that is null there (page_url of a url+caption list
source) is typed null and the first sample that has one fails to load. The card's YAML
header names the `default` config (the tar shards: image, caption, metadata) with its
features typed from the metadata schema, so nothing is inferred and any file order loads.

The ledger is not a config of the card: `datasets` picks one builder for a whole folder
(from the first config's files: webdataset here), so a parquet config beside the tars would
be read as tar files. `rejects/` alone holds only parquet files with one fixed schema, so
`load_dataset(f"{DIR}/rejects")` reads it with the parquet builder, typed, with no card.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import yaml

from lait.dataset import layout, storage
from lait.dataset.schema import METADATA_SCHEMA

_DTYPES = {
    pa.string(): "string",
    pa.int32(): "int32",
    pa.int64(): "int64",
    pa.float32(): "float32",
    pa.float64(): "float64",
    pa.bool_(): "bool",
}


def _feature(name: str, data_type: pa.DataType) -> dict[str, Any]:
    """One column in the card's YAML form: `dtype` for a scalar, `list` (of a dtype or of a
    nested list) for a list column such as face_boxes (list<list<int32>>)."""
    if pa.types.is_list(data_type):
        inner = _feature(name, data_type.value_type)
        return {"list": inner.get("dtype", inner)}
    try:
        return {"dtype": _DTYPES[data_type]}
    except KeyError:
        raise TypeError(
            f"metadata column {name} has type {data_type}, which the dataset card "
            "cannot describe yet; add it to lait.dataset.card._DTYPES"
        ) from None


def metadata_features() -> list[dict[str, Any]]:
    """The metadata columns as `datasets` features in YAML form (name + dtype or list)."""
    return [{"name": field.name, **_feature(field.name, field.type)} for field in METADATA_SCHEMA]


def sample_features(image_formats: list[str]) -> list[dict[str, Any]]:
    """The columns of a sample as the webdataset builder yields them: one per tar member
    extension (each image format, txt, json), then `__key__` and `__url__`."""
    images: list[dict[str, Any]] = [{"name": ext, "dtype": "image"} for ext in image_formats]
    return [
        *images,
        {"name": "txt", "dtype": "string"},
        {"name": "json", "struct": metadata_features()},
        {"name": "__key__", "dtype": "string"},
        {"name": "__url__", "dtype": "string"},
    ]


def dataset_card(folder: str, stats: dict[str, Any]) -> str:
    """The README.md of `folder`, whose counts are `stats` (as stats.json holds them)."""
    configs: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    if stats["shards"]:
        configs.append(
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": "*.tar"}],
                "default": True,
            }
        )
        infos.append(
            {"config_name": "default", "features": sample_features(stats["image_formats"])}
        )
    header = yaml.safe_dump(
        {"configs": configs, "dataset_info": infos}, sort_keys=False, allow_unicode=True
    )
    sources = ", ".join(
        f"{s} {c['accepted']}/{c['candidates']}" for s, c in stats["by_source"].items()
    )
    return (
        f"---\n{header}---\n\n"
        "# LAIT image-text dataset\n\n"
        f"{stats['accepted']} accepted image-text pairs in {stats['shards']} WebDataset shards "
        f"(KEY.jpg/png/webp, KEY.txt, KEY.json) out of {stats['candidates']} candidates; "
        f"{stats['rejected']} rejected candidates with their stage and reason in "
        f"`{layout.REJECTS_DIR}/`. Accepted per source: {sources or 'none'}.\n\n"
        "```python\n"
        "import datasets\n"
        'samples = datasets.load_dataset(DIR, split="train")  # image, caption, metadata\n'
        'rejects = datasets.load_dataset(f"{DIR}/rejects", split="train")  # the ledger\n'
        "```\n\n"
        f"`{layout.STATS_FILE}` holds the per-stage funnel, `{layout.SIZES_FILE}` the samples "
        "per shard (open_clip's trainer reads it), `NNNNN.parquet` each shard's metadata. "
        f"A crawl's `{layout.PAGES_DIR}/` holds one row per page it tried (fetched, refused or "
        "failed, with the reason and the candidates it gave).\n"
    )


def write_card(folder: str, stats: dict[str, Any]) -> None:
    """Commit README.md (the dataset card) from `stats`."""
    fs, root = storage.filesystem(folder)
    with storage.atomic_output(fs, storage.join(root, layout.CARD_FILE)) as out:
        out.write(dataset_card(folder, stats).encode("utf-8"))


def hf_features(image_formats: Sequence[str] = ("jpg",)) -> Any:
    """The card's sample features as `datasets.Features`, for loading shards without the card:
    `load_dataset("webdataset", data_files=..., features=hf_features())`. Needs `datasets`."""
    import datasets

    return datasets.Features._from_yaml_list(sample_features(list(image_formats)))
