"""Model loading shared by the pipeline and the pretrainer: CLIP (open_clip) and fastText LID.

Both halves load models here so CLIP scoring in `pipeline/` and CLIP-grid regions in
`pretrain/` use one loader and the same weights. Nothing here imports Beam.
"""
