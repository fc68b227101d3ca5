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

.PHONY: install demo test readme-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# one stamp per (torch spec, index): after an install with another spec or index, torch is
# reinstalled from this one (pip alone would keep an installed 2.13.0+cpu for "torch==2.13.0" from a
# CUDA index), then its dependencies are completed. A venv with no stamp keeps a torch that fits the
# spec (e.g. a CUDA build installed by hand, README "Installing").
TORCH_STAMP := $(VENV)/.torch-$(shell printf '%s %s' '$(TORCH_SPEC)' '$(TORCH_INDEX)' | md5sum | cut -c1-12)

$(TORCH_STAMP): | $(BIN)/python
	if ls $(VENV)/.torch-* >/dev/null 2>&1; then \
	  $(BIN)/pip install --quiet --force-reinstall --no-deps $(TORCH_INDEX) "$(TORCH_SPEC)"; fi
	$(BIN)/pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	rm -f $(VENV)/.torch-*
	touch $@

$(VENV)/.installed: pyproject.toml $(TORCH_STAMP) | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

$(DEMO_DATA)/dataset.json: | $(VENV)/.installed
	$(BIN)/python pipelines/prepare_data.py synthetic --profile public --scale 0.05 --seed 0 --out $(DEMO_DATA) --overwrite

demo: $(VENV)/.installed $(DEMO_DATA)/dataset.json
	$(BIN)/python pipelines/train.py --data $(DEMO_DATA) --epochs 5 --patience 2 --seed 0 --out $(DEMO_RUN)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# every README command in order on a fresh clone, at a small scale (~15 min; .ci/readme_check.py)
readme-check:
	$(PYTHON) .ci/readme_check.py

clean:
	rm -rf $(VENV) data runs
