# Three commands set everything up on a fresh machine:
#   make train   # trains configs/default.toml (offline, CPU-friendly), then prints a sample
#   make test    # runs the test suite
#   make ablate  # runs the ladder ablation (configs/ablations/ladder-cpu.toml) and writes its report
#   make speedrun  # configs/speedrun.toml to the default's val bpb in a fraction of its time, then further
#   make post    # post-training: base -> chat SFT -> {more SFT, RFT, DPO, GRPO} x 2 seeds, report in runs/post
# All create the virtual environment .venv on first use.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The torch wheel to install when none is present. Override for a specific build, e.g.
#   make TORCH_SPEC="torch==2.11.0 --index-url https://download.pytorch.org/whl/cu128" setup
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= configs/default.toml
ABLATION ?= configs/ablations/ladder-cpu.toml

.PHONY: setup train speedrun speedrun-race post test test-fast ablate bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

train: setup
	$(PY) -m train $(CONFIG)
	$(PY) -m train.sample runs/$(basename $(notdir $(CONFIG))) --max_new_tokens 250

# The speedrun (docs/speedrun.md): the record config to the default's val bpb, then the same stack
# trained past it (configs/speedrun-long.toml, still under the default's time), each with a sample
# as `make train` prints one. `make speedrun-race` times the record against the default in one
# invocation (scripts/speedrun.py).
speedrun: setup
	$(PY) -m train configs/speedrun.toml
	$(PY) -m train.sample runs/speedrun --max_new_tokens 250
	$(PY) -m train configs/speedrun-long.toml
	$(PY) -m train.sample runs/speedrun-long --max_new_tokens 250

speedrun-race: setup
	$(PY) scripts/speedrun.py

# Post-training on the CPU (docs/results/post-cpu/): the base run (make train's), chat SFT on worked
# two-digit additions, then the methods side by side through the ablation runner, which writes
# runs/post/results.md, results.csv and curves.png; last, the thinking-budget curves of the SFT run
# and of GRPO's seed 1 (think-budget.md and .png).
# Finished runs are kept: a second call only redoes what is missing.
post: setup
	$(PY) -m train configs/default.toml
	$(PY) -m train configs/post/sft-arithmetic.toml
	$(PY) -m train.ablate configs/ablations/post-cpu.toml
	$(PY) scripts/think_budget.py runs/sft-arithmetic runs/post/grpo/seed1 --limit 200 \
		--plot runs/post/think-budget.png | tee runs/post/think-budget.md

# The tests also need the optional extras they check: lm-evaluation-harness (the peer of
# train/evals/) and TensorBoard (the event files of train.tensorboard). `make train` does not.
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev,eval,tensorboard]"
	touch $@

test: setup $(VENV)/.installed-test
	$(PY) -m pytest -q

test-fast: setup $(VENV)/.installed-test
	$(PY) -m pytest -q -m "not slow"

ablate: setup
	$(PY) -m train.ablate $(ABLATION)

bench: setup
	$(PY) scripts/bench.py configs/bench/gpt2-6x384.toml

clean:
	rm -rf $(VENV) runs .cache .pytest_cache
