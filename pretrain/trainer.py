"""The staged trainer: `run_plan` trains a plan's stages in order, each from the last's checkpoint.

One code path for one CPU process and for `torchrun` with DDP (gloo on CPU, NCCL on GPU):
AdamW, gradient clipping, linear warm-up then cosine decay, gradient accumulation, bf16
autocast where the device has it, complete checkpoints every `save_every` steps, TensorBoard
and JSONL logs, and a progress bar with each objective's loss and samples/s.

Layout of `out_dir`:
    plan.yaml                      the resolved plan
    01-web/checkpoint/             latest complete checkpoint of the stage (resume point)
    01-web/final/                  the stage's model (save_pretrained + tokenizer + regions.json)
    01-web/summary.json            losses, throughput, corrupt samples, held-out metrics
    01-web/log.jsonl, tb/          per-step logs
    summary.json                   all stages and the final checkpoint

`out_dir` may be a bucket folder (gs://, s3://): the run then trains in a local working copy
and publishes to the bucket (`pretrain.run_folder`), each checkpoint as
`01-web/checkpoints/step-N/` made visible by its `COMPLETE` marker; a rerun resumes from the
latest complete one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel

from pretrain.checkpoint import (
    MODEL_DIR,
    find_checkpoint,
    load_state,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from pretrain.config import ImageBertConfig
from pretrain.data import (
    CollatorConfig,
    PretrainCollator,
    PretrainStream,
    make_loader,
)
from pretrain.inputs import model_inputs
from pretrain.model import ImageBertForPreTraining, init_text_from_bert
from pretrain.objectives.soft_mask import non_content_ids
from pretrain.plan import Plan, StagePlan, load_plan
from pretrain.regions import RegionSource, build_region_source
from pretrain.run_folder import LOG_FILE, TENSORBOARD_DIR, RunFolder
from pretrain.text import load_tokenizer

FINAL_DIR = "final"
CHECKPOINT_DIR = "checkpoint"
REGIONS_FILE = "regions.json"
TRAINING_ARGS_FILE = "training_args.json"


class StopTraining(Exception):
    """Raised by `stop_after_steps` to simulate a killed run (tests, preemption drills)."""


# How long the other ranks wait for rank 0's evaluation between stages (on a gloo group, so
# NCCL's collective timeout never fires on a long evaluation).
MAIN_RANK_WAIT = timedelta(hours=12)


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    wait_group: Any = None  # a gloo group with a long timeout, for `wait_for_main`

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wait_for_main(self) -> None:
        """Every rank waits here until rank 0 (evaluating, writing) arrives too."""
        if self.world_size > 1:
            dist.barrier(group=self.wait_group)


def setup_distributed() -> Distributed:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    wait_group = dist.new_group(backend="gloo", timeout=MAIN_RANK_WAIT)
    return Distributed(dist.get_rank(), dist.get_world_size(), local, wait_group)


def pick_device(distributed: Distributed) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", distributed.local_rank)
    return torch.device("cpu")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where the device has it (auto), or as asked; None means fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision is auto, bf16 or fp32, not {precision!r}")
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def lr_lambda(stage: StagePlan) -> Callable[[int], float]:
    """Linear warm-up to 1, then cosine decay to `min_lr_ratio` at the last step."""

    def factor(step: int) -> float:
        if step < stage.warmup_steps:
            return (step + 1) / stage.warmup_steps
        span = max(1, stage.steps - stage.warmup_steps)
        progress = min(1.0, (step - stage.warmup_steps) / span)
        return stage.min_lr_ratio + (1 - stage.min_lr_ratio) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )

    return factor


def make_optimizer(model: torch.nn.Module, stage: StagePlan) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, LayerNorms and the contrastive temperature."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        plain = param.ndim < 2 or "norm" in name or name.endswith("logit_scale")
        (no_decay if plain else decay).append(param)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": stage.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=stage.lr,
    )


def build_model(plan: Plan, regions: RegionSource, tokenizer: Any) -> ImageBertForPreTraining:
    """Stage 1's model: the plan's sizes, the region source's dims, the text side from BERT."""
    config = ImageBertConfig(
        **{
            **plan.model,
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "cls_token_id": tokenizer.cls_token_id,
            "region_feature_dim": regions.feature_dim,
            "max_regions": regions.max_regions,
            "num_region_classes": max(1, regions.num_classes),
            # A plan that trains grounding in any stage gets the head from the start.
            "grounding_head": bool(plan.model.get("grounding_head"))
            or any(s.objectives.grounding for s in plan.stages),
            **regions.model_config(),  # e.g. Pixel-BERT's trainable backbone
        }
    )
    model = ImageBertForPreTraining(config)
    weights_path = (config.visual_backbone or {}).get("weights")
    if weights_path and model.imagebert.visual is not None:
        from pretrain.pixel_backbone import load_backbone_weights

        load_backbone_weights(model.imagebert.visual, weights_path)
    if plan.text_model != "none":
        from pretrain.text import resolve_text_model

        init_text_from_bert(model, resolve_text_model(plan.text_model))
    return model


def rank_resume_state(
    state: dict[str, Any], rank: int, world_size: int, workers: int
) -> tuple[int, dict[int, Any] | None, dict[str, Any] | None]:
    """(batches consumed, data-stream states, RNG state) a rank resumes with from `state`.

    The data streams continue exactly only with the same world size and loader workers; a
    rank the checkpoint did not have (the run grew) starts its streams and RNGs fresh, with
    the model, optimizer and step restored like every other rank's.
    """
    ranks = state.get("ranks", [])
    if rank >= len(ranks):
        return 0, None, None
    mine = ranks[rank]
    if state.get("world_size") == world_size and mine.get("workers") == workers:
        return mine["consumed"], mine["data"], mine["rng"]
    return 0, None, mine["rng"]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _gather(value: Any, distributed: Distributed) -> list[Any]:
    if distributed.world_size == 1:
        return [value]
    out: list[Any] = [None] * distributed.world_size
    dist.all_gather_object(out, value)
    return out


class _Log:
    """JSONL + TensorBoard (when installed) on the main rank."""

    def __init__(self, folder: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.writer: Any = None
        self.file: Any = None
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.file = open(folder / LOG_FILE, "a", encoding="utf-8")  # noqa: SIM115
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder / TENSORBOARD_DIR))
        except ImportError:
            self.writer = None  # tensorboard is optional; the JSONL log has the same numbers

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def flush(self) -> None:
        """Everything logged so far on disk (before the logs are published)."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()


def train_stage(
    plan: Plan,
    index: int,
    stage_dir: Path,
    *,
    init_from: str | None,
    regions: RegionSource,
    tokenizer: Any,
    distributed: Distributed,
    resume: bool = True,
    progress: bool = True,
    stop_after_steps: int | None = None,
    on_checkpoint: Callable[[Path, int], None] | None = None,
) -> dict[str, Any]:
    """Train one stage; return its summary. Resumes from `stage_dir/checkpoint` if present.

    `on_checkpoint(folder, step)` runs on the main rank after each checkpoint is saved, with
    the logs flushed, while the other ranks wait (a bucket run publishes it there).
    """
    stage = plan.stages[index]
    device = pick_device(distributed)
    seed = plan.seed + 1000 * index + distributed.rank
    _seed_everything(seed)
    checkpoint = find_checkpoint(stage_dir / CHECKPOINT_DIR) if resume else None
    if checkpoint is not None:
        model = ImageBertForPreTraining.from_pretrained(checkpoint / MODEL_DIR)
    elif init_from is not None:
        model = ImageBertForPreTraining.from_pretrained(init_from)
    else:
        model = build_model(plan, regions, tokenizer)
    model.to(device)  # type: ignore[arg-type]
    model.train()
    weights = stage.objectives.as_dict()
    # Soft masks pick a content word per matched row; these token ids are never picked.
    skip_ids = non_content_ids(tokenizer) if weights.get("soft_itm") else None
    wrapped: torch.nn.Module = model
    if distributed.world_size > 1:
        wrapped = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=any(w == 0 for w in weights.values()),
        )
    optimizer = make_optimizer(model, stage)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(stage))
    generator = torch.Generator().manual_seed(seed)
    state = load_state(checkpoint) if checkpoint is not None else None
    step, consumed, start_states, rank_rng = 0, 0, None, None
    corrupt_before = 0
    progress_before: dict[str, Any] = {}
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        consumed, start_states, rank_rng = rank_resume_state(
            state, distributed.rank, distributed.world_size, max(1, plan.num_workers)
        )
        corrupt_before = state.get("corrupt", 0)
        progress_before = state.get("progress", {})
    resumed_from = step if state is not None else None

    workers = max(1, plan.num_workers)
    collator = PretrainCollator(
        tokenizer,
        regions,
        CollatorConfig(
            max_text_len=stage.max_text_len,
            mlm_probability=stage.mlm_probability,
            whole_word_masking=stage.whole_word_masking,
            itm_swap=stage.itm_swap,
        ),
    )
    stream = PretrainStream(
        stage.sources,
        regions,
        collator,
        stage.batch_size,
        seed=plan.seed + 7919 * index,
        rank=distributed.rank,
        world_size=distributed.world_size,
        holdout=plan.holdout,
        start_states=start_states,
        worker_offset=consumed % workers,
    )
    loader = make_loader(stream, plan.num_workers, pin_memory=device.type == "cuda")
    batches: Iterator[dict[str, Any]] = iter(loader)
    # Restore RNGs after the loader's iterator drew its worker seeds, so a resumed run's
    # dropout and masks match an uninterrupted one's.
    if rank_rng is not None:
        restore_rng_state(rank_rng, generator)
    data_states: dict[int, Any] = dict(start_states or {})
    dtype = autocast_dtype(plan.precision, device)
    log = _Log(stage_dir, distributed.is_main)
    bar = None
    if progress and distributed.is_main:
        from tqdm import tqdm

        bar = tqdm(total=stage.steps, initial=step, desc=f"stage {index + 1} {stage.name}")
    sums: dict[str, float] = defaultdict(float)
    window = 0
    corrupt = corrupt_before
    started = time.monotonic()
    window_start, window_samples = started, 0
    samples_done = 0
    history: list[dict[str, float]] = list(progress_before.get("tail", []))
    first: dict[str, float] = progress_before.get("first", {})

    def publish(folder: Path, saved_step: int) -> None:
        if on_checkpoint is not None:
            log.flush()
            on_checkpoint(folder, saved_step)

    try:
        while step < stage.steps:
            values: dict[str, float] = defaultdict(float)
            for micro in range(stage.grad_accum):
                batch = next(batches)
                consumed += 1
                data_states[batch["data_state"]["worker"]] = batch["data_state"]["state"]
                corrupt += batch["corrupt"]
                encoded = regions.encode(batch["regions"], device)
                inputs = model_inputs(
                    batch,
                    encoded,
                    generator,
                    device,
                    stage.region_mask_probability,
                    augment=stage.augment,
                    mask_token_id=tokenizer.mask_token_id,
                    soft_mask_skip_ids=skip_ids,
                )
                sync = (
                    contextlib.nullcontext()
                    if micro == stage.grad_accum - 1 or distributed.world_size == 1
                    else wrapped.no_sync()  # type: ignore[operator]
                )
                with sync:
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        out = wrapped(
                            **inputs,
                            objective_weights=weights,
                            moc_variant=stage.moc_variant,
                            itm_negatives=stage.itm_negatives,
                            itm_swap=stage.itm_swap,
                            itc_focal_gamma=stage.itc_focal_gamma,
                            soft_mask_config=stage.soft_mask,
                        )
                    (out.loss / stage.grad_accum).backward()
                for key, value in {**out.losses, **out.metrics}.items():
                    values[key] += value.item() / stage.grad_accum
                values["loss"] += out.loss.item() / stage.grad_accum
                samples_done += len(batch["keys"])
                window_samples += len(batch["keys"])
            if stage.clip_grad > 0:
                values["grad_norm"] = float(
                    torch.nn.utils.clip_grad_norm_(model.parameters(), stage.clip_grad)
                )
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            for key, value in values.items():
                sums[key] += value
            window += 1
            history.append({"step": step, **values})
            first = first or history[-1]
            del history[:-10]  # the summary's "last" is the mean of the last 10 steps
            if step % plan.log_every == 0 or step == stage.steps:
                now = time.monotonic()
                rate = window_samples * distributed.world_size / max(now - window_start, 1e-9)
                means = {k: v / window for k, v in sums.items()}
                means.update(
                    samples_per_s=rate, lr=float(scheduler.get_last_lr()[0]), corrupt=corrupt
                )
                log.write(step, means)
                if bar is not None:
                    shown = {k: f"{v:.3f}" for k, v in means.items() if k in ("mlm", "moc", "mrfr")}
                    shown.update({k: f"{means[k]:.3f}" for k in ("itm", "itc") if k in means})
                    shown["samples/s"] = f"{rate:.1f}"
                    bar.set_postfix(shown, refresh=False)
                sums.clear()
                window, window_start, window_samples = 0, now, 0
            if bar is not None:
                bar.update(1)
            if step % plan.save_every == 0 or step == stage.steps:
                _save(
                    stage_dir / CHECKPOINT_DIR,
                    model,
                    optimizer,
                    scheduler,
                    step,
                    index,
                    plan,
                    generator,
                    consumed,
                    data_states,
                    corrupt,
                    distributed,
                    {
                        "first": first,
                        "tail": history,
                        "samples": progress_before.get("samples", 0) + samples_done,
                        "seconds": progress_before.get("seconds", 0.0) + time.monotonic() - started,
                    },
                    publish,
                )
            if stop_after_steps is not None and step >= stop_after_steps and step < stage.steps:
                raise StopTraining(f"stopped after step {step} as asked")
    finally:
        if bar is not None:
            bar.close()
        log.close()
        del batches
    # The whole stage's figures, over every run that trained it (a resume adds to them).
    elapsed = progress_before.get("seconds", 0.0) + time.monotonic() - started
    samples_all = (progress_before.get("samples", 0) + samples_done) * distributed.world_size
    tail = history[-max(1, min(len(history), 10)) :]
    summary: dict[str, Any] = {
        "stage": stage.name,
        "steps": step,
        "samples": samples_all,
        "seconds": round(elapsed, 2),
        "samples_per_s": round(samples_all / max(elapsed, 1e-9), 2),
        "corrupt": corrupt,
        "first": first,
        "last": {k: sum(h.get(k, 0.0) for h in tail) / len(tail) for k in tail[0]}
        if history
        else {},
    }
    if resumed_from is not None:
        summary["resumed_from_step"] = resumed_from
    if distributed.is_main:
        final = stage_dir / FINAL_DIR
        model.save_pretrained(final)
        tokenizer.save_pretrained(final)
        (final / REGIONS_FILE).write_text(json.dumps(regions.spec(), indent=2), encoding="utf-8")
        # What evaluating this checkpoint must repeat (the text length it was trained at).
        training_args = {"plan": plan.name, "stage": stage.name, "max_text_len": stage.max_text_len}
        (final / TRAINING_ARGS_FILE).write_text(json.dumps(training_args, indent=2))
        summary["checkpoint"] = str(final)
    if distributed.world_size > 1:
        dist.barrier()
    return summary


def _save(
    folder: Path,
    model: ImageBertForPreTraining,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    index: int,
    plan: Plan,
    generator: torch.Generator,
    consumed: int,
    data_states: dict[int, Any],
    corrupt: int,
    distributed: Distributed,
    progress: dict[str, Any],
    publish: Callable[[Path, int], None],
) -> None:
    mine = {
        "rng": rng_state(generator),
        "consumed": consumed,
        "data": data_states,
        "workers": max(1, plan.num_workers),
    }
    ranks = _gather(mine, distributed)
    if distributed.is_main:
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "stage": index,
            "stage_name": plan.stages[index].name,
            "world_size": distributed.world_size,
            "ranks": ranks,
            "corrupt": corrupt,
            "progress": progress,
            "plan": plan.to_dict(),
        }
        save_checkpoint(folder, model, state)
        publish(folder, step)
    # The long-timeout group: publishing to a bucket may outlast a collective's timeout.
    distributed.wait_for_main()


def stage_dir_name(index: int, stage: StagePlan) -> str:
    return f"{index + 1:02d}-{stage.name}"


def run_plan(
    plan_path_or_obj: str | os.PathLike[str] | dict[str, Any] | Plan,
    *,
    out_dir: str | os.PathLike[str],
    resume: bool = True,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    region_source: RegionSource | None = None,
    stop_after_steps: int | None = None,
    evaluate_stages: bool | None = None,
    final_eval: bool = True,
    evaluate_untrained: bool = False,
) -> dict[str, Any]:
    """Train every stage of a plan in order; return per-stage summaries and the final checkpoint.

    Stage N starts from stage N-1's `final/`. With `resume`, finished stages are skipped and an
    unfinished one continues from its last checkpoint. `region_source` replaces the plan's
    (tests inject a tiny CLIP). Under torchrun every rank calls this; rank 0 writes.

    `final_eval` evaluates the last checkpoint on the held-out samples of every source of the
    plan (`result["final_eval"]`); `evaluate_untrained` does the same for the untrained stage-1
    model (`result["untrained_eval"]`), the baseline `lait demo` prints beside it.
    """
    run = RunFolder(out_dir)
    try:
        if int(os.environ.get("RANK", "0")) == 0:
            run.check()  # before any work: no such bucket, no credentials, no permission
        plan = load_plan(plan_path_or_obj, overrides)
        return _run_stages(
            plan,
            run,
            resume=resume,
            progress=progress,
            region_source=region_source,
            stop_after_steps=stop_after_steps,
            evaluate_stages=evaluate_stages,
            final_eval=final_eval,
            evaluate_untrained=evaluate_untrained,
        )
    finally:
        run.close()


def _run_stages(
    plan: Plan,
    run: RunFolder,
    *,
    resume: bool,
    progress: bool,
    region_source: RegionSource | None,
    stop_after_steps: int | None,
    evaluate_stages: bool | None,
    final_eval: bool,
    evaluate_untrained: bool,
) -> dict[str, Any]:
    """`run_plan`'s work, into `run.local` (and published to a bucket run folder)."""
    distributed = setup_distributed()
    if plan.cpu_threads and not torch.cuda.is_available():
        torch.set_num_threads(plan.cpu_threads)
    out = run.local
    if distributed.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "plan.yaml").write_text(yaml.safe_dump(plan.to_dict(), sort_keys=False))
        run.publish("plan.yaml")
    device = pick_device(distributed)
    regions = region_source or build_region_source(plan.regions, device=str(device))
    tokenizer = load_tokenizer(plan.text_model if plan.text_model != "none" else "default")

    def local_final(name: str | None) -> str | None:
        """A stage's final/ on this machine (downloaded from a bucket run on first use)."""
        if name is None:
            return None
        if not (out / name / FINAL_DIR).is_dir():
            run.fetch(name, FINAL_DIR)
        return str(out / name / FINAL_DIR)

    def publish_logs(name: str) -> None:
        run.publish(name, LOG_FILE)
        run.publish(name, TENSORBOARD_DIR, append_only=True)

    summaries: list[dict[str, Any]] = []
    previous: str | None = None  # the name of the last stage's folder
    for index, stage in enumerate(plan.stages):
        name = stage_dir_name(index, stage)
        stage_dir = out / name
        summary_file = stage_dir / "summary.json"
        if resume and run.exists(name, "summary.json") and run.exists(name, FINAL_DIR):
            run.fetch(name, "summary.json")
            summary = json.loads(summary_file.read_text())
        else:
            if run.is_remote and resume:
                # Every rank reads the checkpoint; the main rank appends to the logs.
                found = run.fetch_checkpoint(name, stage_dir / CHECKPOINT_DIR)
                if found is not None and distributed.is_main:
                    run.fetch(name, LOG_FILE)
                    run.fetch(name, TENSORBOARD_DIR)
            elif run.is_remote and distributed.is_main:
                run.delete_checkpoints(name)  # from scratch: a later rerun must not resume them

            def on_checkpoint(folder: Path, step: int, name: str = name) -> None:
                publish_logs(name)  # the logs as far as the checkpoint, then the checkpoint
                run.publish_checkpoint(name, folder, step)

            summary = train_stage(
                plan,
                index,
                stage_dir,
                init_from=local_final(previous),
                regions=regions,
                tokenizer=tokenizer,
                distributed=distributed,
                resume=resume,
                progress=progress,
                stop_after_steps=stop_after_steps,
                on_checkpoint=on_checkpoint if run.is_remote else None,
            )
            run_eval = (
                plan.evaluate.after_each_stage if evaluate_stages is None else evaluate_stages
            )
            if distributed.is_main and run_eval:
                from pretrain.evaluate import evaluate

                summary["eval"] = evaluate(
                    stage_dir / FINAL_DIR,
                    [s.path for s in stage.sources],
                    holdout=plan.holdout,
                    region_source=regions,
                    top_k=plan.evaluate.top_k,
                    max_samples=plan.evaluate.max_samples,
                    batch_size=plan.evaluate.batch_size,
                    device=str(device),
                )
            if distributed.is_main:
                summary["checkpoint"] = run.url(name, FINAL_DIR)
                summary_file.write_text(json.dumps(summary, indent=2))
                publish_logs(name)
                run.publish(name, FINAL_DIR)
                run.publish(name, "summary.json")  # last: the stage counts as done from here
            distributed.wait_for_main()  # rank 0 evaluated; no collective timed out meanwhile
        summaries.append(summary)
        previous = name
    result: dict[str, Any] = {
        "plan": plan.name,
        "out_dir": run.url(),
        "stages": summaries,
        "final": None if previous is None else run.url(previous, FINAL_DIR),
    }
    last = local_final(previous) if distributed.is_main else None
    if distributed.is_main and (final_eval or evaluate_untrained):
        from pretrain.evaluate import evaluate

        folders = list(dict.fromkeys(s.path for stage in plan.stages for s in stage.sources))
        options = {
            "holdout": plan.holdout,
            "region_source": regions,
            "tokenizer": tokenizer,
            "top_k": plan.evaluate.top_k,
            "max_samples": plan.evaluate.max_samples,
            "batch_size": plan.evaluate.batch_size,
            "device": str(device),
        }
        if final_eval and last is not None:
            result["final_eval"] = evaluate(last, folders, **options)
            narrated = list(
                dict.fromkeys(
                    (s.path, s.narratives) for st in plan.stages for s in st.sources if s.narratives
                )
            )
            if narrated and ImageBertConfig.from_pretrained(last).grounding_head:
                from pretrain.grounding import evaluate_grounding

                try:
                    result["grounding_eval"] = evaluate_grounding(
                        last,
                        narrated,
                        holdout=plan.holdout,
                        region_source=regions,
                        tokenizer=tokenizer,
                        max_samples=plan.evaluate.max_samples,
                        batch_size=plan.evaluate.batch_size,
                        device=str(device),
                    )
                except ValueError as error:  # e.g. narratives without word boxes: no measure
                    result["grounding_eval"] = {"error": str(error)}
        if evaluate_untrained:
            _seed_everything(plan.seed)
            untrained = build_model(plan, regions, tokenizer)
            result["untrained_eval"] = evaluate(
                untrained, folders, max_text_len=plan.stages[0].max_text_len, **options
            )
    if distributed.is_main:
        (out / "summary.json").write_text(json.dumps(result, indent=2))
        run.publish("summary.json")
    distributed.wait_for_main()
    return result
