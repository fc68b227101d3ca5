# Set-up and the two everyday commands: `make demo` and `make test` (both idempotent).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build by default (on this machine kind it is a local wheel). On a GPU box:
#   make TORCH_SPEC="torch==2.13.0" TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128" install
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
DEMO_DATA ?= data/public-s0.05
DEMO_RUN ?= runs/demo

.PHONY: install demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

$(DEMO_DATA)/dataset.json: | $(VENV)/.installed
	$(BIN)/python pipelines/prepare_data.py synthetic --profile public --scale 0.05 --seed 0 --out $(DEMO_DATA) --overwrite

demo: $(VENV)/.installed $(DEMO_DATA)/dataset.json
	$(BIN)/python pipelines/train.py --data $(DEMO_DATA) --epochs 5 --patience 2 --seed 0 --out $(DEMO_RUN)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) data runs
