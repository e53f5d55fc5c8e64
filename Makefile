# normjax: every command a user needs. Creates .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SIZE ?= smoke
WORKDIR ?= runs

.PHONY: demo test test-slow bench bench-gpu install clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the offline embedded data (scikit-learn digits): a deep BN ResNet.
demo: $(STAMP)
	$(BIN)/normjax train experiments/resnet_digits.py --size $(SIZE) --workdir $(WORKDIR)/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -x

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks.bench --out benchmarks/results-cpu.json

# On a GPU machine whose image already has jax[cuda] and torch: no venv, the system python.
bench-gpu:
	$(PY) -m benchmarks.bench --quick --out benchmarks/results-gpu.json

clean:
	rm -rf $(VENV) runs *.egg-info
