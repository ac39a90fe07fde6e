"""Language-ID stage throughput vs raw fastText predict on the same captions, same process.

    python bench/langid.py [--captions 200000]
    python bench/langid.py --smoke         # 4,096 captions, one repeat: seconds

ours: the `LanguageFilter` stage's DoFn (`IdentifyLanguage`: set up once, then batches of
records → labelled or rejected records), driven batch by batch as a Beam worker drives it.
It asks fastText for each caption's top language first and for the top k only where that
does not settle the verdict, so its speed depends on the share of captions plainly in a kept
language (most of the demo web's, which is English-heavy).
peer: `fasttext` `model.predict(list_of_captions, k)` on the same captions and batches.
Last line: one JSON object with ratio, ours_per_s, peer_per_s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lait.demo_web import build_site
from lait.models.langid import LanguageIdentifier
from lait.record import Record
from pipeline.langid import LanguageConfig
from pipeline.langid.transform import IdentifyLanguage

BATCH = 2048


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captions", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="4,096 captions, one repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.captions, args.repeats = 4096, 1
    site = build_site(seed=5, n_images=200)
    base = [
        Record.candidate(
            source="b",
            url=f"http://h/{r.ref_id}",
            caption=r.caption,
            caption_source=r.caption_source,
        )
        for r in site.ground_truth.references
    ]
    records = [base[i % len(base)] for i in range(args.captions)]
    batches = [records[i : i + BATCH] for i in range(0, len(records), BATCH)]
    config = LanguageConfig()
    raw = LanguageIdentifier(k=config.top_k).model
    stage = IdentifyLanguage(config)
    stage.setup()
    caption_batches = [[r.caption for r in batch] for batch in batches]

    def peer() -> float:
        started = time.perf_counter()
        for captions in caption_batches:
            raw.predict(captions, k=config.top_k)
        return time.perf_counter() - started

    def ours() -> float:
        started = time.perf_counter()
        for batch in batches:
            for _ in stage.process(batch):
                pass
        return time.perf_counter() - started

    # interleaved, so a busy spell on a shared machine does not fall on one side only
    peer_s = ours_s = float("inf")
    for _ in range(args.repeats):
        peer_s = min(peer_s, peer())
        ours_s = min(ours_s, ours())
    n = len(records)
    result = {
        "ratio": round(peer_s / ours_s, 3),
        "ours_per_s": round(n / ours_s),
        "peer_per_s": round(n / peer_s),
        "captions": n,
        "top_k": config.top_k,
        "smoke": args.smoke,
    }
    print(f"stage {n / ours_s:,.0f} captions/s, raw fasttext predict {n / peer_s:,.0f}/s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
