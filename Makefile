# Two entry points: `make demo` (install, then an offline smoke sweep) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev,search]'
	touch $(STAMP)

install: $(STAMP)

# Four seeds of a born-again chain on generated data, offline, about 3 minutes on 2 CPU cores (BENCHMARKS.md)
# (search_spaces/demo.yaml; `python -m ray_ban.sweep table1 --preset smoke` runs every row of Table 1 tiny).
demo: $(STAMP)
	$(BIN)/python -m ray_ban.sweep search_spaces/demo.yaml --out runs --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) runs .pytest_cache
