"""pretrain: staged ImageBERT pre-training on LAIT dataset folders.

Library (importable without the trainer): `pretrain.config.ImageBertConfig`,
`pretrain.model.ImageBertModel` / `ImageBertForPreTraining`, `pretrain.regions`,
`pretrain.objectives`, `pretrain.data`. Entry points: `pretrain.trainer.run_plan`
(`lait pretrain PLAN.yaml`) and `pretrain.evaluate.evaluate` (`lait evaluate`).
Never imports `pipeline/`.
"""
