# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project on first use.
#
# torch: the CPU build by default. With a GPU, override the spec, e.g.
#   make test TORCH_SPEC='torch==2.13.0' PIP_EXTRA='--index-url https://download.pytorch.org/whl/cu124'
# pyproject only asks for a range (torch>=2.4,<3: fused Adam on CPU), so an installed build is kept.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_EXTRA ?=
BIN := $(VENV)/bin

.PHONY: demo test bench clean-venv

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[test]'
	touch $@

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

demo: $(BIN)/.installed
	$(BIN)/amn train-student --config configs/default.yaml

bench: $(BIN)/.installed
	$(BIN)/python scripts/bench_normaliser.py

clean-venv:
	rm -rf $(VENV)
