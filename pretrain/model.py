"""The ImageBERT model: one transformer over `[CLS] text [SEP] regions`, and its pre-training heads.

Read top to bottom: embeddings (text and regions), a post-LN BERT encoder built on
`scaled_dot_product_attention`, `ImageBertModel` (the encoder users fine-tune), then the heads
and `ImageBertForPreTraining`, whose `forward` returns the weighted sum of the objectives'
losses. The text side has BERT's shapes, so `init_text_from_bert` can copy a BERT checkpoint in.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from pretrain.config import ImageBertConfig
from pretrain.objectives import grounding, itc, itm, mlm, moc, mrfr, repeats, soft_mask
from pretrain.pixel_backbone import PixelBackbone
from pretrain.regions.base import Regions

TEXT_SEGMENT, REGION_SEGMENT = 0, 1


class ImageBertEmbeddings(nn.Module):
    """Text: word + position + segment 0. Region: linear(feature) + linear(box) + segment 1."""

    def __init__(self, config: ImageBertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.text_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.region_feature = nn.Linear(config.region_feature_dim, config.hidden_size)
        self.region_box = nn.Linear(5, config.hidden_size)
        self.region_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)[None]
            + self.token_type_embeddings.weight[TEXT_SEGMENT]
        )
        return self.dropout(self.text_norm(x))

    def embed_regions(self, features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        # Regions carry no sequence position: where a region is comes from its box.
        x = (
            self.region_feature(features)
            + self.region_box(boxes)
            + self.token_type_embeddings.weight[REGION_SEGMENT]
        )
        return self.dropout(self.region_norm(x))


class SelfAttention(nn.Module):
    def __init__(self, config: ImageBertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        n, s, h = x.shape
        q, k, v = (
            self.qkv(x).view(n, s, 3, self.num_heads, h // self.num_heads).permute(2, 0, 3, 1, 4)
        )
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, dropout_p=self.dropout_p if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(n, s, h))

    def query_probabilities(
        self, x: torch.Tensor, key_mask: torch.Tensor, queries: torch.Tensor
    ) -> torch.Tensor:
        """Attention weights (mean over heads, N x S) from one query position per row.

        The forward pass uses fused attention, which never forms the weights; soft masks need
        them for one token, so they are computed here from the same projections.
        """
        n, s, h = x.shape
        picked = x[torch.arange(n, device=x.device), queries]  # N x H
        q = self.qkv(picked)[:, :h].view(n, self.num_heads, 1, h // self.num_heads)
        k = self.qkv(x)[..., h : 2 * h].view(n, s, self.num_heads, -1).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(h // self.num_heads)  # N x heads x 1 x S
        scores = scores.masked_fill(~key_mask.bool(), float("-inf"))
        return scores.float().softmax(-1).mean(1)[:, 0]


class Layer(nn.Module):
    """A post-LN BERT layer (as BERT checkpoints expect)."""

    def __init__(self, config: ImageBertConfig) -> None:
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.output_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(x + self.dropout(self.attention(x, key_mask)))
        return self.output_norm(x + self.dropout(self.output(self.act(self.intermediate(x)))))


@dataclass
class ImageBertOutput(ModelOutput):
    """The encoder's states; `pooler_output` is tanh(dense([CLS]))."""

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    query_attention: torch.Tensor | None = None  # N x S, last layer, from `attention_queries`


class ImageBertPreTrainedModel(PreTrainedModel):
    config_class = ImageBertConfig
    base_model_prefix = "imagebert"
    supports_gradient_checkpointing = False
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, ContrastiveHead):
            nn.init.constant_(module.logit_scale, math.log(1 / 0.07))


class ImageBertModel(ImageBertPreTrainedModel):
    """The single-stream encoder. Either side may be left out (text-only or regions-only)."""

    # `AutoModel` on a pre-training checkpoint drops the heads without listing them.
    _keys_to_ignore_on_load_unexpected = [  # noqa: RUF012 (transformers reads this)
        r"^(mlm|moc|mrfr|itm|grounding)_head\.",
        r"^contrastive\.",
    ]

    def __init__(self, config: ImageBertConfig) -> None:
        super().__init__(config)
        self.embeddings = ImageBertEmbeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        self.visual = (
            PixelBackbone(config.visual_backbone, config.pixel_sample)
            if config.visual_backbone
            else None
        )
        self.post_init()

    def pixel_regions(self, pixels: torch.Tensor) -> Regions:
        """Pixel-BERT's regions of B images: the backbone's feature-map cells (a random sample
        of them per image in training mode, all in eval mode) with their grid boxes."""
        if self.visual is None:
            raise ValueError("this model has no visual backbone (config.visual_backbone is None)")
        features, boxes, mask = self.visual(pixels)
        return Regions(features, boxes, mask)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        assert isinstance(value, nn.Embedding)
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        region_features: torch.Tensor | None = None,
        region_boxes: torch.Tensor | None = None,
        region_mask: torch.Tensor | None = None,
        attention_queries: torch.Tensor | None = None,
    ) -> ImageBertOutput:
        """Encode `[CLS] text [SEP]` (input_ids, N x L) followed by regions (N x R x F).

        Masks are 1/True for real tokens and regions. For a regions-only pass give
        input_ids = [[CLS]] per row. `attention_queries` (N token positions, -1 for none) also
        returns the last layer's attention from those tokens (`query_attention`, detached).
        """
        parts = [self.embeddings.embed_text(input_ids)]
        masks = [
            torch.ones_like(input_ids, dtype=torch.bool)
            if attention_mask is None
            else attention_mask.bool()
        ]
        if region_features is not None:
            assert region_boxes is not None, "region_boxes are required with region_features"
            parts.append(self.embeddings.embed_regions(region_features, region_boxes))
            masks.append(
                torch.ones(region_features.shape[:2], dtype=torch.bool, device=input_ids.device)
                if region_mask is None
                else region_mask.bool()
            )
        x = torch.cat(parts, dim=1)
        key_mask = torch.cat(masks, dim=1)[:, None, None, :]  # broadcast over heads and queries
        query_attention = None
        for i, layer in enumerate(self.layers):
            if attention_queries is not None and i == len(self.layers) - 1:
                assert isinstance(layer, Layer)
                with torch.no_grad():
                    query_attention = layer.attention.query_probabilities(
                        x, key_mask, attention_queries.clamp(min=0)
                    )
                    query_attention[attention_queries < 0] = 0.0
            x = layer(x, key_mask)
        return ImageBertOutput(
            last_hidden_state=x,
            pooler_output=torch.tanh(self.pooler(x[:, 0])),
            query_attention=query_attention,
        )


class PredictionHead(nn.Module):
    """dense + act + LayerNorm, then a linear decoder (BERT's prediction head)."""

    def __init__(self, config: ImageBertConfig, out_features: int) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(x))))


class ContrastiveHead(nn.Module):
    """Projects a unimodal pass's [CLS] into the shared space for ITC and the retrieval pre-pass."""

    def __init__(self, config: ImageBertConfig) -> None:
        super().__init__()
        self.text = nn.Linear(config.hidden_size, config.contrastive_dim)
        self.image = nn.Linear(config.hidden_size, config.contrastive_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


class GroundingHead(nn.Module):
    """PixelLLM-style word grounding: each text token's point (x, y) in the image, in 0..1.

    A pointer, not a free regression: the token attends over its image's regions and points at
    the attention-weighted mean of their box centres, plus a bounded offset regressed from its
    state. Pointing at a region the token already relates to trains far faster on CPU budgets
    than regressing coordinates from scratch, and stays inside the image by construction.
    """

    def __init__(self, config: ImageBertConfig) -> None:
        super().__init__()
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.offset = PredictionHead(config, 2)
        self.offset_range = 0.25

    def forward(
        self,
        text_h: torch.Tensor,
        region_h: torch.Tensor,
        region_boxes: torch.Tensor,
        region_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Points N x L x 2 for text states N x L x H over regions N x R x H (boxes N x R x 5)."""
        scores = self.query(text_h) @ self.key(region_h).transpose(1, 2)
        scores = scores.float() / math.sqrt(text_h.shape[-1])
        scores = scores.masked_fill(~region_mask.bool()[:, None, :], float("-inf"))
        centres = (region_boxes[..., :2].float() + region_boxes[..., 2:4].float()) / 2
        pointed = scores.softmax(-1) @ centres
        offset = self.offset_range * torch.tanh(self.offset(text_h).float())
        return (pointed + offset).clamp(0.0, 1.0)


@dataclass
class ImageBertPreTrainingOutput:
    """`loss` is the weighted sum of `losses`; `metrics` are per-objective accuracies."""

    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    itm_logits: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None
    moc_logits: torch.Tensor | None = None


class ImageBertForPreTraining(ImageBertPreTrainedModel):
    """ImageBERT with the MLM, MOC, MRFR, ITM and ITC heads (and grounding, if configured)."""

    _tied_weights_keys = {  # noqa: RUF012 (transformers reads this class attribute)
        "mlm_head.decoder.weight": "imagebert.embeddings.word_embeddings.weight"
    }

    def __init__(self, config: ImageBertConfig) -> None:
        super().__init__(config)
        self.imagebert = ImageBertModel(config)
        self.mlm_head = PredictionHead(config, config.vocab_size)
        self.moc_head = PredictionHead(config, config.num_region_classes)
        self.mrfr_head = PredictionHead(config, config.region_feature_dim)
        self.itm_head = nn.Linear(config.hidden_size, 2)
        self.contrastive = ContrastiveHead(config)
        self.grounding_head = GroundingHead(config) if config.grounding_head else None
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_head.decoder

    def set_output_embeddings(self, value: nn.Module) -> None:
        assert isinstance(value, nn.Linear)
        self.mlm_head.decoder = value

    def itm_scores(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        region_features: torch.Tensor,
        region_boxes: torch.Tensor,
        region_mask: torch.Tensor,
    ) -> torch.Tensor:
        """log P(match) of each (text, regions) row: the score used to rerank retrieval."""
        out = self.imagebert(input_ids, attention_mask, region_features, region_boxes, region_mask)
        assert out.pooler_output is not None
        return F.log_softmax(self.itm_head(out.pooler_output).float(), dim=-1)[:, 1]

    def predict_points(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        region_features: torch.Tensor,
        region_boxes: torch.Tensor,
        region_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Each text token's predicted point (N x L x 2, x and y in 0..1 of the image)."""
        if self.grounding_head is None:
            raise ValueError("this model has no grounding head; train with grounding_head: true")
        out = self.imagebert(input_ids, attention_mask, region_features, region_boxes, region_mask)
        assert out.last_hidden_state is not None
        text_len = input_ids.shape[1]
        hidden = out.last_hidden_state
        mask = (
            torch.ones(region_features.shape[:2], dtype=torch.bool, device=hidden.device)
            if region_mask is None
            else region_mask
        )
        return self.grounding_head(hidden[:, :text_len], hidden[:, text_len:], region_boxes, mask)

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit-norm text embedding from a text-only pass (ITC space)."""
        hidden = self.imagebert(input_ids, attention_mask).last_hidden_state
        assert hidden is not None
        cls = hidden[:, 0]
        return F.normalize(self.contrastive.text(cls).float(), dim=-1)

    def embed_image(
        self, region_features: torch.Tensor, region_boxes: torch.Tensor, region_mask: torch.Tensor
    ) -> torch.Tensor:
        """Unit-norm image embedding from a regions-only pass ([CLS] regions)."""
        n = region_features.shape[0]
        cls = torch.full(
            (n, 1), self.config.cls_token_id, dtype=torch.long, device=region_features.device
        )
        out = self.imagebert(cls, None, region_features, region_boxes, region_mask)
        assert out.last_hidden_state is not None
        return F.normalize(self.contrastive.image(out.last_hidden_state[:, 0]).float(), dim=-1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        region_features: torch.Tensor | None = None,
        region_boxes: torch.Tensor | None = None,
        region_mask: torch.Tensor | None = None,
        positive: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        masked_regions: torch.Tensor | None = None,
        region_labels: torch.Tensor | None = None,
        region_probs: torch.Tensor | None = None,
        region_targets: torch.Tensor | None = None,
        itm_labels: torch.Tensor | None = None,
        itc_input_ids: torch.Tensor | None = None,
        itc_attention_mask: torch.Tensor | None = None,
        itc_region_features: torch.Tensor | None = None,
        itc_region_boxes: torch.Tensor | None = None,
        itc_region_mask: torch.Tensor | None = None,
        objective_weights: dict[str, float] | None = None,
        moc_variant: str = "ce",
        itm_negatives: str = "random",
        itm_swap: str = "both",
        grounding_points: torch.Tensor | None = None,
        grounding_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_index: torch.Tensor | None = None,
        itc_pixel_values: torch.Tensor | None = None,
        itc_focal_gamma: float = 0.0,
        soft_mask_words: torch.Tensor | None = None,
        soft_mask_config: soft_mask.SoftMaskConfig | None = None,
        itm_input_ids: torch.Tensor | None = None,
        itm_attention_mask: torch.Tensor | None = None,
        itm_region_features: torch.Tensor | None = None,
        itm_region_boxes: torch.Tensor | None = None,
        itm_region_mask: torch.Tensor | None = None,
        image_ids: torch.Tensor | None = None,
        caption_ids: torch.Tensor | None = None,
    ) -> ImageBertPreTrainingOutput:
        """Every objective whose labels are given and whose weight is not 0.

        Two passes, as UNITER and ALBEF run them. The *masked* pass (`input_ids`, regions) is
        for MLM, MOC and MRFR, counted on matched rows (`positive`, default all). The *clean*
        pass (`itm_input_ids`, `itm_region_*`: unmasked text and regions, matched rows first,
        then one negative per matched row) is for ITM, soft-masked ITM and grounding, so what
        they learn is what evaluation asks of clean inputs. Without `itm_input_ids` the masked
        pass's inputs serve both (callers that give clean rows, e.g. scoring). ITC runs two
        unimodal passes on `itc_*`.

        `itm_negatives="hard"` re-pairs the unmatched clean rows by ITC logits (ALBEF): each
        becomes a matched row's caption with another matched row's image, drawn by the softmax
        of the scaled similarities. `image_ids` and `caption_ids` (one per matched row) keep a
        repeated image or caption from being an ITC or hard ITM negative.

        Pixel-BERT (`config.visual_backbone`): give the B images once as `pixel_values` and
        the clean rows' images as `image_index` instead of regions; the backbone runs once
        (twice with an augmented ITC view `itc_pixel_values`); the masked pass sees the B
        images in order. `itc_focal_gamma` > 0 makes ITC focal. `soft_mask_words` (a token
        position per clean row, -1 for none) with the `soft_itm` weight adds soft-masked ITM
        examples (`pretrain.objectives.soft_mask`).
        """
        if itm_negatives not in ("random", "hard"):
            raise ValueError(f"itm_negatives is 'random' or 'hard', not {itm_negatives!r}")
        weights = {"mlm": 1.0, "moc": 1.0, "mrfr": 1.0, "itm": 1.0, "itc": 0.0, "grounding": 0.0}
        weights.update(objective_weights or {})
        if pixel_values is not None:
            images, itc_images = self._pixel_regions(pixel_values, itc_pixel_values)
            if itm_input_ids is None:
                # One pass over the given rows (each row's image by `image_index`).
                images = images if image_index is None else images.index(image_index)
            else:
                rows = images if image_index is None else images.index(image_index)
                itm_region_features, itm_region_boxes = rows.features, rows.boxes
                itm_region_mask = rows.mask
            region_features, region_boxes, region_mask = images.features, images.boxes, images.mask
            itc_region_features, itc_region_boxes = itc_images.features, itc_images.boxes
            itc_region_mask = itc_images.mask
        if region_features is None or region_boxes is None or region_mask is None:
            raise ValueError("give region_features, region_boxes and region_mask, or pixel_values")
        result = ImageBertPreTrainingOutput()
        if positive is None:
            positive = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        separate = itm_input_ids is not None
        if itm_input_ids is not None:
            assert itm_attention_mask is not None and itm_region_features is not None
            assert itm_region_boxes is not None and itm_region_mask is not None
            clean = _Rows(
                itm_input_ids, itm_attention_mask, itm_region_features, itm_region_boxes,
                itm_region_mask,
            )  # fmt: skip
        else:
            clean = _Rows(input_ids, attention_mask, region_features, region_boxes, region_mask)
        clean_positive = itm_labels == 1 if separate and itm_labels is not None else positive

        has_itc = itc_input_ids is not None and itc_region_features is not None
        hard = itm_negatives == "hard" and itm_labels is not None and bool(weights["itm"])
        if hard and not separate:
            raise ValueError("hard ITM negatives need the clean ITM rows (itm_input_ids, ...)")
        if hard and not has_itc:
            raise ValueError("hard ITM negatives need the ITC inputs (itc_input_ids, itc_region_*)")
        if has_itc and (weights["itc"] or hard):
            assert itc_region_features is not None and itc_input_ids is not None
            assert itc_region_boxes is not None and itc_region_mask is not None
            with contextlib.nullcontext() if weights["itc"] else torch.no_grad():
                text = self.embed_text(itc_input_ids, itc_attention_mask)  # type: ignore[arg-type]
                image = self.embed_image(itc_region_features, itc_region_boxes, itc_region_mask)
            scale = self.contrastive.logit_scale.clamp(max=math.log(100)).exp()
            if weights["itc"]:
                result.losses["itc"], result.metrics["itc_acc"] = itc.loss(
                    image, text, scale, itc_focal_gamma, image_ids, caption_ids
                )
            if hard:
                assert itm_labels is not None
                repeat = (
                    None
                    if image_ids is None or caption_ids is None
                    else repeats.interchangeable(image_ids, caption_ids, image_ids, caption_ids)
                )
                # ALBEF samples by the softmax of the ITC logits, not of raw cosines.
                logits = scale.detach() * image @ text.t()
                (text_rows, region_rows), valid = _hard_negative_rows(
                    clean_positive, logits, itm_swap, repeat
                )
                clean = clean.take(text_rows, region_rows)
                n = int(clean_positive.sum())
                itm_labels = itm_labels.clone()
                itm_labels[n:][~valid] = itm.IGNORE

        soft = soft_mask_words is not None and bool(weights.get("soft_itm", 0.0))
        wants_itm = itm_labels is not None and bool(weights["itm"])
        wants_grounding = bool(weights["grounding"]) and (
            grounding_points is not None and grounding_mask is not None
        )
        wants_masked = bool(weights["mlm"] or weights["moc"] or weights["mrfr"]) and (
            mlm_labels is not None or masked_regions is not None
        )
        masked_out = None
        if wants_masked or not separate:
            masked_out = self.imagebert(
                input_ids,
                attention_mask,
                region_features,
                region_boxes,
                region_mask,
                attention_queries=soft_mask_words if soft and not separate else None,
            )
            hidden = masked_out.last_hidden_state
            assert hidden is not None
            text_len = input_ids.shape[1]
            self._masked_losses(
                result,
                weights,
                hidden[:, :text_len],
                hidden[:, text_len:],
                positive,
                mlm_labels,
                masked_regions,
                region_labels,
                region_probs,
                region_targets,
                moc_variant,
            )
        if not (wants_itm or soft or wants_grounding):
            return self._total(result, weights)
        if not separate:
            assert masked_out is not None
            out = masked_out  # the caller's rows serve every objective
        else:
            if not wants_itm:
                # ITM off: soft masks and grounding need only the matched rows.
                keep = clean_positive
                clean, clean_positive = clean.select(keep), clean_positive[keep]
                if soft_mask_words is not None:
                    soft_mask_words = soft_mask_words[keep]
                if grounding_points is not None and grounding_mask is not None:
                    grounding_points, grounding_mask = grounding_points[keep], grounding_mask[keep]
            out = self.imagebert(
                *clean.as_args(), attention_queries=soft_mask_words if soft else None
            )
        hidden = out.last_hidden_state
        assert hidden is not None and out.pooler_output is not None
        text_len = clean.input_ids.shape[1]
        text_h, region_h = hidden[:, :text_len], hidden[:, text_len:]
        if wants_itm:
            assert itm_labels is not None
            logits = self.itm_head(out.pooler_output)
            result.itm_logits = logits
            result.losses["itm"], result.metrics["itm_acc"] = itm.loss(logits, itm_labels)
        if soft and out.query_attention is not None:
            assert soft_mask_words is not None
            result.losses["soft_itm"], result.metrics["soft_itm_acc"] = self._soft_masked_itm(
                clean.input_ids,
                clean.attention_mask,
                Regions(clean.region_features, clean.region_boxes, clean.region_mask),
                out.query_attention[:, text_len:],
                soft_mask_words,
                soft_mask_config or soft_mask.SoftMaskConfig(),
            )
        if wants_grounding:
            assert grounding_points is not None and grounding_mask is not None
            if self.grounding_head is None:
                raise ValueError("the grounding objective needs model: {grounding_head: true}")
            picked = grounding_mask.bool() & clean_positive[:, None]
            points = self.grounding_head(text_h, region_h, clean.region_boxes, clean.region_mask)
            result.losses["grounding"], result.metrics["grounding_l1"] = grounding.loss(
                points[picked], grounding_points[picked]
            )
        return self._total(result, weights)

    def _masked_losses(
        self,
        result: ImageBertPreTrainingOutput,
        weights: dict[str, float],
        text_h: torch.Tensor,
        region_h: torch.Tensor,
        positive: torch.Tensor,
        mlm_labels: torch.Tensor | None,
        masked_regions: torch.Tensor | None,
        region_labels: torch.Tensor | None,
        region_probs: torch.Tensor | None,
        region_targets: torch.Tensor | None,
        moc_variant: str,
    ) -> None:
        """MLM, MOC and MRFR on the masked pass's matched rows, into `result`."""
        if mlm_labels is not None and weights["mlm"]:
            labels = mlm_labels.masked_fill(~positive[:, None], mlm.IGNORE)
            picked = labels != mlm.IGNORE
            logits = self.mlm_head(text_h[picked])
            result.mlm_logits = logits
            result.losses["mlm"], result.metrics["mlm_acc"] = mlm.loss(logits, labels[picked])
        if masked_regions is None:
            return
        picked = masked_regions & positive[:, None]
        if weights["moc"] and (region_labels is not None or region_probs is not None):
            labelled = picked
            if region_labels is None and region_probs is not None:
                # A region without a class distribution (all zeros) has no MOC label.
                labelled = picked & (region_probs.sum(-1) > 0)
            logits = self.moc_head(region_h[labelled])
            result.moc_logits = logits
            result.losses["moc"], result.metrics["moc_acc"] = moc.loss(
                logits,
                None if region_labels is None else region_labels[labelled],
                None if region_probs is None else region_probs[labelled],
                variant=moc_variant,
            )
        if weights["mrfr"] and region_targets is not None:
            predicted = self.mrfr_head(region_h[picked])
            result.losses["mrfr"] = mrfr.loss(predicted, region_targets[picked])

    @staticmethod
    def _total(
        result: ImageBertPreTrainingOutput, weights: dict[str, float]
    ) -> ImageBertPreTrainingOutput:
        total = sum(weights[name] * value for name, value in result.losses.items())
        result.loss = total if isinstance(total, torch.Tensor) else None
        return result

    def _pixel_regions(
        self, pixel_values: torch.Tensor, itc_pixel_values: torch.Tensor | None
    ) -> tuple[Regions, Regions]:
        """(the B images' regions, their regions for ITC) from the backbone, run once per image
        (and once more on an augmented ITC view)."""
        images = self.imagebert.pixel_regions(pixel_values)
        itc_images = (
            images if itc_pixel_values is None else self.imagebert.pixel_regions(itc_pixel_values)
        )
        return images, itc_images

    def _soft_masked_itm(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        regions: Regions,
        word_attention: torch.Tensor,
        words: torch.Tensor,
        config: soft_mask.SoftMaskConfig,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ITM loss and accuracy on soft-masked copies of the rows that have a chosen word."""
        rows = words >= 0
        if not bool(rows.any()):
            zero = self.itm_head.weight.sum() * 0.0
            return zero, zero.detach()
        features, _ = soft_mask.apply(
            regions.features[rows], word_attention[rows], regions.mask[rows], config
        )
        out = self.imagebert(
            input_ids[rows], attention_mask[rows], features, regions.boxes[rows], regions.mask[rows]
        )
        assert out.pooler_output is not None
        label = 1 if config.label == "matched" else 0
        labels = torch.full((int(rows.sum()),), label, dtype=torch.long, device=input_ids.device)
        return itm.loss(self.itm_head(out.pooler_output), labels)


@dataclass
class _Rows:
    """The (text, regions) rows of one encoder pass."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    region_features: torch.Tensor
    region_boxes: torch.Tensor
    region_mask: torch.Tensor

    def take(self, text_rows: torch.Tensor, region_rows: torch.Tensor) -> _Rows:
        return _Rows(
            self.input_ids[text_rows],
            self.attention_mask[text_rows],
            self.region_features[region_rows],
            self.region_boxes[region_rows],
            self.region_mask[region_rows],
        )

    def select(self, keep: torch.Tensor) -> _Rows:
        return self.take(keep, keep)

    def as_args(self) -> tuple[torch.Tensor, ...]:
        return (
            self.input_ids,
            self.attention_mask,
            self.region_features,
            self.region_boxes,
            self.region_mask,
        )


def _hard_negative_rows(
    positive: torch.Tensor,
    logits: torch.Tensor,
    swap: str,
    repeat: torch.Tensor | None = None,
) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """((text row, region row) for every row, valid per negative): matched rows keep their
    own, unmatched rows get a hard pair drawn from the matched rows (the collator puts the B
    matched rows first). `logits` (B x B, images x captions) are the scaled ITC similarities."""
    n = int(positive.sum())
    if not bool(positive[:n].all()) or positive.shape[0] != 2 * n:
        raise ValueError("hard ITM negatives expect B matched rows followed by B unmatched rows")
    caption, image, valid = itm.hard_negative_pairs(
        logits[:n, :n], swap, repeat=None if repeat is None else repeat[:n, :n]
    )
    own = torch.arange(n, device=positive.device)
    return (torch.cat([own, caption]), torch.cat([own, image])), valid


def init_text_from_bert(model: ImageBertForPreTraining, bert_name_or_path: str) -> list[str]:
    """Copy a BERT checkpoint's embeddings and first layers into `model`; return copied names.

    The BERT's hidden size, heads and intermediate size must match; it may have more layers
    (the first `num_hidden_layers` are taken) or fewer (the rest stay randomly initialised).
    """
    source = _bert_state_dict(bert_name_or_path)
    config = model.config
    hidden = source["embeddings.word_embeddings.weight"].shape[1]
    if hidden != config.hidden_size:
        raise ValueError(
            f"{bert_name_or_path} has hidden size {hidden} but the model has "
            f"{config.hidden_size}; set hidden_size (and heads, intermediate_size) to match"
        )
    pairs: dict[str, str] = {
        "imagebert.embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
        "imagebert.embeddings.position_embeddings.weight": "embeddings.position_embeddings.weight",
        "imagebert.embeddings.token_type_embeddings.weight": (
            "embeddings.token_type_embeddings.weight"
        ),
        "imagebert.embeddings.text_norm.weight": "embeddings.LayerNorm.weight",
        "imagebert.embeddings.text_norm.bias": "embeddings.LayerNorm.bias",
    }
    copied = {ours: source[theirs] for ours, theirs in pairs.items()}
    if "pooler.dense.weight" in source:
        copied["imagebert.pooler.weight"] = source["pooler.dense.weight"]
        copied["imagebert.pooler.bias"] = source["pooler.dense.bias"]
    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        if p + "attention.self.query.weight" not in source:
            break
        q = f"imagebert.layers.{i}."
        a = p + "attention.self."
        copied[q + "attention.qkv.weight"] = torch.cat(
            [source[a + n + ".weight"] for n in ("query", "key", "value")]
        )
        copied[q + "attention.qkv.bias"] = torch.cat(
            [source[a + n + ".bias"] for n in ("query", "key", "value")]
        )
        for ours, theirs in (
            ("attention.out", "attention.output.dense"),
            ("attention_norm", "attention.output.LayerNorm"),
            ("intermediate", "intermediate.dense"),
            ("output", "output.dense"),
            ("output_norm", "output.LayerNorm"),
        ):
            copied[f"{q}{ours}.weight"] = source[f"{p}{theirs}.weight"]
            copied[f"{q}{ours}.bias"] = source[f"{p}{theirs}.bias"]
    for ours, theirs in (
        ("mlm_head.dense", "cls.predictions.transform.dense"),
        ("mlm_head.norm", "cls.predictions.transform.LayerNorm"),
    ):
        if f"{theirs}.weight" in source:
            copied[f"{ours}.weight"] = source[f"{theirs}.weight"]
            copied[f"{ours}.bias"] = source[f"{theirs}.bias"]
    if "cls.predictions.bias" in source:
        copied["mlm_head.decoder.bias"] = source["cls.predictions.bias"]
    own = model.state_dict()
    for name, value in copied.items():
        if own[name].shape != value.shape:
            raise ValueError(
                f"{bert_name_or_path}: {name} has shape {tuple(value.shape)}, the model "
                f"{tuple(own[name].shape)}; match the BERT's sizes in the model config"
            )
    model.load_state_dict(copied, strict=False)
    model.tie_weights()
    return sorted(copied)


def _bert_state_dict(name_or_path: str) -> dict[str, torch.Tensor]:
    """A BERT checkpoint's tensors with any `bert.` prefix removed (BertModel or ...ForMaskedLM).

    A local folder is read directly; a name goes through transformers' cache (and the hub only
    if the user allows it).
    """
    import os

    from safetensors.torch import load_file
    from transformers.utils import cached_file

    names = ("model.safetensors", "pytorch_model.bin")
    path = None
    for name in names:
        if os.path.isdir(name_or_path):
            candidate = os.path.join(name_or_path, name)
            path = candidate if os.path.exists(candidate) else None
        else:
            path = cached_file(name_or_path, name, _raise_exceptions_for_missing_entries=False)
        if path:
            break
    if not path:
        raise FileNotFoundError(
            f"no model.safetensors or pytorch_model.bin for {name_or_path}; give a BERT "
            "folder or a name available offline"
        )
    tensors = (
        load_file(path)
        if path.endswith(".safetensors")
        else torch.load(path, map_location="cpu", weights_only=True)
    )
    return {k.removeprefix("bert."): v for k, v in tensors.items()}
