"""The stage plan: one YAML file says what to pre-train, on what, for how long, in which order.

```yaml
name: demo
seed: 0
data_root: out/demo            # "{data_root}" in source paths is replaced by this
holdout: 0.15                  # fraction of images (by a hash of the bytes) held out for eval
text_model: default            # BERT to start the text side from: default | none | name | path
model: {hidden_size: 384, num_hidden_layers: 2, num_attention_heads: 12, intermediate_size: 1536}
regions: {type: clip-grid, model: lait-demo-clip, vocabulary: [circle, square, ...]}
num_workers: 1
cpu_threads: 1                 # on CPU: torch threads per process (omit for torch's default)
precision: auto                # auto (bf16 on GPUs that have it) | bf16 | fp32
log_every: 10
save_every: 50
evaluate: {top_k: 16, max_samples: 200, after_each_stage: true}
stages:
  - name: web
    sources: [{path: "{data_root}/web", weight: 1.0}]   # + narratives: FILE.jsonl (grounding)
    steps: 300
    batch_size: 32
    grad_accum: 1
    lr: 1.0e-4
    warmup_steps: 30
    min_lr_ratio: 0.1          # cosine decay to lr * min_lr_ratio
    weight_decay: 0.01
    clip_grad: 1.0
    objectives: {mlm: 1.0, moc: 1.0, mrfr: 1.0, itm: 1.0, itc: 1.0}
  - name: cc_sbu
    sources: [{path: "{data_root}/cc_sbu", weight: 1.0}]
    ...
```

Stage N starts from stage N-1's final checkpoint. `overrides` (e.g. from CLI flags) set dotted
keys before parsing: `{"stages.0.steps": 10, "stages.*.batch_size": 8, "data_root": "/data"}`.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import yaml

from pretrain.data import SourceSpec
from pretrain.objectives import ObjectiveWeights
from pretrain.objectives.augment import AugmentConfig
from pretrain.objectives.soft_mask import SoftMaskConfig
from pretrain.regions import RegionsConfig


class PlanError(ValueError):
    """The plan file is malformed; the message names the key to fix."""


@dataclass(frozen=True)
class StagePlan:
    name: str
    sources: tuple[SourceSpec, ...]
    steps: int
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-4
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    clip_grad: float = 1.0
    objectives: ObjectiveWeights = field(default_factory=ObjectiveWeights)
    moc_variant: str = "ce"
    mlm_probability: float = 0.15
    whole_word_masking: bool = False
    region_mask_probability: float = 0.15
    itm_swap: str = "both"
    itm_negatives: str = "random"  # or "hard": unmatched pairs drawn by ITC similarity (ALBEF)
    max_text_len: int = 40
    itc_focal_gamma: float = 0.0  # focal ITC (Park & Han): 0 is plain ITC
    soft_mask: SoftMaskConfig = field(default_factory=SoftMaskConfig)  # for the soft_itm objective
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # the ITC views' distortions


@dataclass(frozen=True)
class EvalPlan:
    top_k: int = 16
    max_samples: int = 1000
    batch_size: int = 64
    after_each_stage: bool = True


@dataclass(frozen=True)
class Plan:
    stages: tuple[StagePlan, ...]
    name: str = "plan"
    seed: int = 0
    data_root: str = "."
    holdout: float = 0.1
    text_model: str = "default"
    model: dict[str, Any] = field(default_factory=dict)
    regions: RegionsConfig = field(default_factory=RegionsConfig)
    num_workers: int = 1
    cpu_threads: int | None = None  # torch threads per process on CPU (None: torch's default)
    precision: str = "auto"
    log_every: int = 10
    save_every: int = 100
    evaluate: EvalPlan = field(default_factory=EvalPlan)

    def to_dict(self) -> dict[str, Any]:
        """A plain form (written beside the checkpoints, readable by `load_plan`)."""
        out = asdict(self)
        out["regions"]["vocabulary"] = list(self.regions.vocabulary)
        return out


def _set(tree: Any, dotted: str, value: Any) -> None:
    head, _, rest = dotted.partition(".")
    if isinstance(tree, list):
        targets = range(len(tree)) if head == "*" else [int(head)]
        for i in targets:
            if rest:
                _set(tree[i], rest, value)
            else:
                tree[i] = value
        return
    if not isinstance(tree, dict):
        raise PlanError(f"override {dotted!r} goes into a {type(tree).__name__}, not a mapping")
    if rest:
        _set(tree.setdefault(head, {}), rest, value)
    else:
        tree[head] = value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PlanError(f"{where}: unknown keys {unknown}; known keys are {sorted(known)}")
    try:
        return cls(**values)
    except TypeError as error:
        raise PlanError(f"{where}: {error}") from error


def _pixel_objectives(objectives: dict[str, Any], where: str) -> None:
    """Pixel-BERT trains MLM + ITM (+ ITC): MOC and MRFR have no labels or fixed targets there.

    Left out, they are turned off; asked for, the plan is an error that says so.
    """
    for name in ("moc", "mrfr"):
        if objectives.get(name, 0.0):
            raise PlanError(
                f"{where}: objectives.{name} needs region labels or fixed region features, which "
                f"`regions: {{type: pixels}}` does not have; set {name}: 0 (Pixel-BERT trains "
                "MLM and ITM, optionally ITC)"
            )
        objectives[name] = 0.0


def load_plan(
    plan: str | os.PathLike[str] | dict[str, Any] | Plan,
    overrides: dict[str, Any] | None = None,
) -> Plan:
    """A `Plan` from a YAML path, a dict or a Plan, with dotted-key overrides applied."""
    if isinstance(plan, Plan):
        if not overrides:
            return plan
        raw: dict[str, Any] = plan.to_dict()
    elif isinstance(plan, dict):
        raw = copy.deepcopy(plan)
    else:
        with open(plan, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle) or {}
    for key, value in (overrides or {}).items():
        _set(raw, key, value)
    if not raw.get("stages"):
        raise PlanError("the plan has no stages; add a `stages:` list")
    data_root = str(raw.get("data_root", "."))
    stages = []
    for i, stage in enumerate(raw.pop("stages")):
        where = f"stages[{i}]"
        stage = dict(stage)
        sources = stage.pop("sources", None)
        if not sources:
            raise PlanError(f"{where}: no sources; give [{{path: FOLDER, weight: 1.0}}]")
        specs = tuple(
            SourceSpec(str(s).replace("{data_root}", data_root))
            if isinstance(s, str)
            else SourceSpec(
                str(s["path"]).replace("{data_root}", data_root),
                s.get("weight", 1.0),
                str(s["narratives"]).replace("{data_root}", data_root)
                if s.get("narratives")
                else None,
            )
            for s in sources
        )
        objectives_raw = dict(stage.pop("objectives", {}) or {})
        if (raw.get("regions") or {}).get("type") == "pixels":
            _pixel_objectives(objectives_raw, where)
        objectives = _build(ObjectiveWeights, objectives_raw, where)
        for name, cls in (("soft_mask", SoftMaskConfig), ("augment", AugmentConfig)):
            try:
                stage[name] = _build(cls, stage.pop(name, {}) or {}, f"{where}.{name}")
            except PlanError:
                raise
            except ValueError as error:
                raise PlanError(f"{where}: {error}") from error
        stage.setdefault("name", f"stage{i + 1}")
        if "steps" not in stage:
            raise PlanError(f"{where}: `steps` is required")
        built = _build(StagePlan, {**stage, "sources": specs, "objectives": objectives}, where)
        if built.itm_negatives not in ("random", "hard"):
            raise PlanError(
                f"{where}: itm_negatives is 'random' or 'hard', not {built.itm_negatives!r}"
            )
        if built.itm_negatives == "hard" and built.objectives.itm and not built.objectives.itc:
            # The similarities come from the ITC embeddings; they train only with ITC on.
            raise PlanError(f"{where}: itm_negatives: hard needs the itc objective (weight > 0)")
        stages.append(built)
    regions_raw = dict(raw.pop("regions", {}) or {})
    if "vocabulary" in regions_raw:
        regions_raw["vocabulary"] = tuple(regions_raw["vocabulary"])
    regions = _build(RegionsConfig, regions_raw, "regions")
    evaluate = _build(EvalPlan, raw.pop("evaluate", {}) or {}, "evaluate")
    return _build(
        Plan,
        {**raw, "stages": tuple(stages), "regions": regions, "evaluate": evaluate},
        "plan",
    )
