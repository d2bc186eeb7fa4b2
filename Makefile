# Two commands: `make run` (the demo on a real local broker) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup run test lint bench kafka-stop clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

run: setup
	$(BIN)/modstream demo

lint: setup
	$(BIN)/ruff check pipeline tests bench

test: setup lint
	$(BIN)/modstream kafka start
	$(BIN)/pytest -q

bench: setup
	$(BIN)/modstream kafka start
	$(BIN)/python bench/throughput.py

kafka-stop: setup
	$(BIN)/modstream kafka stop

clean:
	rm -rf $(VENV) .modstream .pytest_cache
