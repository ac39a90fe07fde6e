"""`ImageBertConfig`: the sizes of the single-stream encoder and its pre-training heads."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

# Where `trust_remote_code` finds the classes in a saved folder: `save_pretrained` copies
# `config.py` and `model.py` beside the weights (`pretrain.auto_classes` arranges it). All three
# are listed in every folder, so AutoModel also opens a pre-training checkpoint as its encoder.
AUTO_MAP = {
    "AutoConfig": "config.ImageBertConfig",
    "AutoModel": "model.ImageBertModel",
    "AutoModelForPreTraining": "model.ImageBertForPreTraining",
}


class ImageBertConfig(PretrainedConfig):
    """Configuration of an ImageBERT encoder: `[CLS] text [SEP] regions` through one transformer.

    The text side has BERT's shapes (so it can start from a BERT checkpoint); a region is a
    `region_feature_dim` feature vector plus a 5-d box (x1, y1, x2, y2, area, all in 0..1).
    Sizes go from tiny (tests: 32 hidden x 2 layers) to base (768 x 12).

    `visual_backbone` (None: regions come from outside) makes the model Pixel-BERT: a trainable
    CNN over pixels (spec in `pretrain.pixel_backbone`) whose feature-map cells are the regions,
    `pixel_sample` of them kept per image in training.

    `grounding_head` adds PixelLLM-style word grounding: a head regressing each text token's
    point (x, y in 0..1) in the image from its multimodal state (`pretrain.objectives.grounding`).

    `model_type` "imagebert" is registered with transformers' Auto classes on `import pretrain`;
    `auto_map` (default `AUTO_MAP`) lets `trust_remote_code=True` load a folder without it.
    """

    model_type = "imagebert"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 384,
        num_hidden_layers: int = 6,
        num_attention_heads: int = 12,
        intermediate_size: int = 1536,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        pad_token_id: int = 0,
        cls_token_id: int = 101,
        region_feature_dim: int = 768,
        max_regions: int = 100,
        num_region_classes: int = 1601,
        contrastive_dim: int = 256,
        tie_word_embeddings: bool = True,
        visual_backbone: dict[str, Any] | None = None,
        pixel_sample: int = 100,
        grounding_head: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        super().__init__(pad_token_id=pad_token_id, **kwargs)  # type: ignore[call-arg]
        self.tie_word_embeddings = tie_word_embeddings
        self.vocab_size = vocab_size
        self.cls_token_id = cls_token_id
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.region_feature_dim = region_feature_dim
        self.max_regions = max_regions
        self.num_region_classes = num_region_classes
        self.contrastive_dim = contrastive_dim
        self.visual_backbone = visual_backbone
        self.pixel_sample = pixel_sample
        self.grounding_head = grounding_head
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size {hidden_size} is not a multiple of num_attention_heads "
                f"{num_attention_heads}; pick sizes that divide"
            )
