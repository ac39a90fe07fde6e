"""One typed config for every dedupe stage, with defaults that work offline."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DedupeConfig:
    """Which duplicate kinds to find and how close counts as "the same".

    Stages run in this order, each on what the previous ones kept: eval-set decontamination,
    same URL, same image bytes (sha256), perceptual near-duplicates (pHash + LSH, checked by
    a colour thumbnail), caption near-duplicates (MinHash + LSH), semantic (CLIP embeddings,
    SemDeDup style). Records with the same key (url + caption) always collapse to one first.
    """

    # exact
    url: bool = True
    sha256: bool = True

    # perceptual: 64-bit pHash split into `phash_bands` bands for LSH; an edge needs
    # Hamming <= `phash_threshold` and, when both records carry image bytes, a colour
    # thumbnail distance <= `colour_threshold` (mean absolute difference of 8x8 RGB
    # thumbnails, 0-255). pHash is grey and coarse: distinct flat images collide at 0 bits.
    perceptual: bool = True
    phash_threshold: int = 10
    phash_bands: int = 6
    # multi-probe: each bucket's distinct hashes also meet the buckets one bit away in its
    # band, so every pair within 2 * phash_bands - 1 bits (11) meets, not only those within
    # phash_bands - 1 (5); members are not copied, only a hash array per bucket and
    # neighbour crosses (see dedupe/probe.py; its cost in bench/dedupe_scale.py)
    phash_probe: bool = True
    colour_threshold: float | None = 3.5

    # caption near-duplicates: Jaccard of word-shingle sets, found by MinHash + LSH
    caption: bool = False
    caption_threshold: float = 0.9
    caption_shingle_words: int = 3
    caption_min_words: int = 6
    caption_num_perm: int = 64
    caption_bands: int = 16

    # semantic (needs embeddings joined by key): k-means, then cosine within a cluster
    # (faiss). Clusters: `semantic_clusters` if set, else one per `semantic_cluster_size`
    # embeddings, at most `semantic_max_clusters`; centroids fitted on a sample of at least
    # `semantic_sample` embeddings (40 per cluster)
    semantic: bool = False
    semantic_threshold: float = 0.95
    semantic_clusters: int | None = None
    semantic_cluster_size: int = 1000
    semantic_max_clusters: int = 50_000
    semantic_sample: int = 20_000
    semantic_iterations: int = 20
    # a cluster with more members is searched block pair by block pair (groups of at most
    # about twice this), never whole in one process (see dedupe/semantic.py)
    semantic_cluster_cap: int = 4096

    # decontamination: evaluation sets (image files or folders, Karpathy split files; local,
    # gs:// or s3://); a training image within `eval_phash_threshold` bits (and the colour
    # check) of any evaluation image is dropped, and so is a record whose caption is one of the
    # sets' captions (same words) or near one (word-shingle Jaccard >= eval_caption_threshold,
    # captions of at least eval_caption_min_words words), or whose image URL one names
    eval_images: tuple[str, ...] = ()
    eval_phash_threshold: int = 10
    eval_caption_threshold: float = 0.8
    eval_caption_shingle_words: int = 1
    eval_caption_min_words: int = 6

    # rounds of min-label propagation when joining edges into clusters
    component_rounds: int = 6
    # biggest bucket compared all-pairs in one block (bigger ones are compared block-wise)
    block_size: int = 2048
    # hot keys: an LSH bucket with more members than `bucket_cap` is never compared all-pairs
    # (each member is compared with the bucket's `bucket_leaders` most-copied members); an
    # exact value or a graph node with more than `bucket_cap` is decided through a side input
    # of the hot ones instead of a GroupByKey (see dedupe/stages.py, dedupe/perceptual.py)
    bucket_cap: int = 2048
    bucket_leaders: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.phash_bands <= 64:
            raise ValueError("phash_bands must be in 1..64")
        if self.caption_num_perm % self.caption_bands:
            raise ValueError("caption_num_perm must be a multiple of caption_bands")
        if not 0.0 < self.caption_threshold <= 1.0 or not -1.0 <= self.semantic_threshold <= 1.0:
            raise ValueError("caption_threshold must be in (0, 1], semantic_threshold in [-1, 1]")
        if self.component_rounds < 1:
            raise ValueError("component_rounds must be >= 1")
        if self.semantic_cluster_cap < 1:
            raise ValueError("semantic_cluster_cap must be >= 1")
        if self.bucket_cap < 2 or self.bucket_leaders < 1:
            raise ValueError("bucket_cap must be >= 2 and bucket_leaders >= 1")
