"""Bench: the ImageBERT training step against transformers' BertForMaskedLM, and the loader.

1. fwd+bwd+AdamW step time of `ImageBertForPreTraining` (MLM only, text + regions) against
   `transformers.BertForMaskedLM` of the same hidden size, layers, heads and total sequence
   length (text tokens + regions) on the same batch: ratio = bert_time / ours (goal >= 0.9).
   The full pre-training step (all objectives: ITM doubles the rows, ITC adds two unimodal
   passes) is timed too, for reference.
2. Loader throughput (batches/s from `PretrainStream` through a DataLoader) against what the
   trainer consumes (full steps/s including region encoding): goal >= 3x.

Runs on CPU (or CUDA when present, with bf16 autocast). The last line is one JSON object.
    python bench/train_step.py [--hidden 256 --layers 4 --batch 32 --steps 10]
    python bench/train_step.py --smoke     # a tiny model, a few steps: seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch


def _time(step: Callable[[], None], repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--text-len", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--samples", type=int, default=240, help="scenes in the loader's folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--smoke", action="store_true", help="a 2-layer model, batch 4, 2 steps, 24 samples"
    )
    args = parser.parse_args()
    if args.smoke:
        args.hidden, args.layers, args.batch, args.steps, args.samples = 64, 2, 4, 2, 24
    torch.set_num_threads(args.threads)
    from transformers import BertConfig, BertForMaskedLM

    from pretrain.config import ImageBertConfig
    from pretrain.data import CollatorConfig, PretrainCollator, PretrainStream, SourceSpec
    from pretrain.inputs import model_inputs
    from pretrain.model import ImageBertForPreTraining
    from pretrain.regions import ClipGridRegions
    from pretrain.synthetic import tiny_clip, write_scene_folder
    from pretrain.text import load_tokenizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else None
    try:
        from lait.models.clip import load_clip

        clip = load_clip("lait-demo-clip", device=str(device))
        clip_parts: tuple[Any, Any, Any] = (clip.model, clip.preprocess, clip.tokenizer)
        clip_name = clip.name
    except (ImportError, RuntimeError):
        clip_parts, clip_name = tiny_clip("vit"), "tiny-random-vit"
    regions = ClipGridRegions(
        *clip_parts, vocabulary=["circle", "square", "star", "background"], device=device
    )
    tokenizer = load_tokenizer()
    config = ImageBertConfig(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden,
        region_feature_dim=regions.feature_dim,
        num_region_classes=regions.num_classes,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.0,
    )
    ours = ImageBertForPreTraining(config).to(device)  # type: ignore[arg-type]
    seq = args.text_len + regions.max_regions
    bert = BertForMaskedLM(
        BertConfig(
            vocab_size=config.vocab_size,
            hidden_size=args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            intermediate_size=4 * args.hidden,
            max_position_embeddings=max(512, seq),
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.0,
        )
    ).to(device)  # type: ignore[arg-type]

    with tempfile.TemporaryDirectory() as folder:
        write_scene_folder(folder, args.samples, seed=0, samples_per_shard=60, image_size=96)
        collator = PretrainCollator(tokenizer, regions, CollatorConfig(max_text_len=args.text_len))
        stream = PretrainStream([SourceSpec(folder)], regions, collator, args.batch)
        batch = next(iter(stream))
        encoded = regions.encode(batch["regions"], device)
        generator = torch.Generator().manual_seed(0)
        inputs = model_inputs(batch, encoded, generator, device)
        b = args.batch
        # The MLM-only comparison: B positive rows, text padded to text_len, plus regions.
        pad = args.text_len - inputs["input_ids"].shape[1]
        text = {
            k: torch.nn.functional.pad(inputs[k][:b], (0, pad), value=v)
            for k, v in (("input_ids", 0), ("attention_mask", 0), ("mlm_labels", -100))
        }
        mlm_only = {"mlm": 1.0, "moc": 0.0, "mrfr": 0.0, "itm": 0.0, "itc": 0.0}
        region_args = {k: inputs[k][:b] for k in ("region_features", "region_boxes", "region_mask")}
        bert_ids = torch.cat(
            [text["input_ids"], torch.full((b, regions.max_regions), 999, device=device)], 1
        )
        bert_mask = torch.cat([text["attention_mask"], region_args["region_mask"].long()], 1)
        bert_labels = torch.cat(
            [text["mlm_labels"], torch.full((b, regions.max_regions), -100, device=device)], 1
        )
        opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4)
        opt_bert = torch.optim.AdamW(bert.parameters(), lr=1e-4)

        def autocast() -> Any:
            return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

        def step_ours() -> None:
            with autocast():
                out = ours(
                    text["input_ids"],
                    text["attention_mask"],
                    mlm_labels=text["mlm_labels"],
                    objective_weights=mlm_only,
                    **region_args,
                )
            out.loss.backward()
            opt_ours.step()
            opt_ours.zero_grad(set_to_none=True)

        def step_bert() -> None:
            with autocast():
                out = bert(input_ids=bert_ids, attention_mask=bert_mask, labels=bert_labels)
            out.loss.backward()
            opt_bert.step()
            opt_bert.zero_grad(set_to_none=True)

        def step_bert_gathered() -> None:
            # The same BERT with its MLM head applied only at masked positions, as ours does:
            # isolates the encoder from the head's full-vocabulary logits.
            with autocast():
                hidden = bert.bert(input_ids=bert_ids, attention_mask=bert_mask)[0]
                picked = bert_labels != -100
                logits = bert.cls(hidden[picked])
                loss = torch.nn.functional.cross_entropy(logits.float(), bert_labels[picked])
            loss.backward()
            opt_bert.step()
            opt_bert.zero_grad(set_to_none=True)

        def step_full() -> None:
            encoded = regions.encode(batch["regions"], device)
            full = model_inputs(batch, encoded, generator, device)
            with autocast():
                out = ours(**full, objective_weights={"itc": 1.0})
            out.loss.backward()
            opt_ours.step()
            opt_ours.zero_grad(set_to_none=True)

        t_ours, t_bert, t_gathered = [], [], []
        for _ in range(3):  # interleaved, so load from other processes hits all alike
            t_ours.append(_time(step_ours, max(1, args.steps // 3)))
            t_bert.append(_time(step_bert, max(1, args.steps // 3)))
            t_gathered.append(_time(step_bert_gathered, max(1, args.steps // 3)))
        ours_s, bert_s = statistics.median(t_ours), statistics.median(t_bert)
        gathered_s = statistics.median(t_gathered)
        full_s = _time(step_full, args.steps)

        from pretrain.data import make_loader

        loader = make_loader(
            PretrainStream([SourceSpec(folder)], regions, collator, args.batch, seed=1),
            num_workers=1,
        )
        it = iter(loader)
        next(it)  # worker start-up
        start = time.perf_counter()
        count = 0
        while time.perf_counter() - start < (1.0 if args.smoke else 5.0):
            next(it)
            count += 1
        loader_bps = count / (time.perf_counter() - start)
        del it

    result = {
        "bench": "train_step",
        "device": device.type,
        "threads": args.threads,
        "clip": clip_name,
        "hidden": args.hidden,
        "layers": args.layers,
        "batch": args.batch,
        "seq_len": seq,
        "ours_mlm_step_s": round(ours_s, 4),
        "bert_mlm_step_s": round(bert_s, 4),
        "step_ratio_bert_over_ours": round(bert_s / ours_s, 3),
        "bert_gathered_head_step_s": round(gathered_s, 4),
        "step_ratio_bert_gathered_over_ours": round(gathered_s / ours_s, 3),
        "ours_full_step_s": round(full_s, 4),
        "trainer_batches_per_s": round(1 / full_s, 3),
        "loader_batches_per_s": round(loader_bps, 3),
        "loader_over_trainer": round(loader_bps * full_s, 3),
        "smoke": args.smoke,
    }
    print(
        f"step (MLM, text+regions, seq {seq}): ours {ours_s * 1000:.1f} ms, "
        f"BertForMaskedLM {bert_s * 1000:.1f} ms → ratio {bert_s / ours_s:.2f} (goal >= 0.9)"
    )
    print(
        f"  same BERT, MLM head only at masked positions: {gathered_s * 1000:.1f} ms → "
        f"ratio {gathered_s / ours_s:.2f}"
    )
    print(f"full pre-training step (MLM+MOC+MRFR+ITM+ITC, region encoding): {full_s * 1000:.1f} ms")
    print(
        f"loader {loader_bps:.2f} batches/s (1 worker) vs trainer {1 / full_s:.2f} batches/s "
        f"→ {loader_bps * full_s:.2f}x (goal >= 3x)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
