"""pretrain: staged ImageBERT pre-training on LAIT dataset folders.

Library (importable without the trainer): `pretrain.config.ImageBertConfig`,
`pretrain.model.ImageBertModel` / `ImageBertForPreTraining`, `pretrain.regions`,
`pretrain.objectives`, `pretrain.data`. Entry points: `pretrain.trainer.run_plan`
(`lait pretrain PLAN.yaml`) and `pretrain.evaluate.evaluate` (`lait evaluate`).
Never imports `pipeline/`.

Importing the package registers ImageBERT with transformers' Auto classes
(`pretrain.auto_classes`): after `import pretrain`, `AutoModel.from_pretrained(final)` works,
and `pretrain.auto_classes.load_for_inference(final)` gives model, tokenizer and regions.
"""

from pretrain.auto_classes import register as _register_auto_classes

_register_auto_classes()
