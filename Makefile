# Two commands: `make run` (the demo on a real local broker) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup lock run test test-unit lint typecheck prometheus bench bench-limit bench-transactions faults soak bench-index bench-text bench-video bench-robustness bench-ocr bench-exchange bench-http text-model kafka-stop clean

setup: $(VENV)/.installed

# Installs the exact versions of requirements-dev.lock, then the package itself.
$(VENV)/.installed: pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -r requirements-dev.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# After changing dependencies in pyproject.toml: re-resolve both lockfiles (Linux x86_64,
# Python 3.11: the machines and the image this runs on).
LOCK = $(BIN)/uv pip compile pyproject.toml -q --python-version 3.11 --python-platform x86_64-unknown-linux-gnu
lock: setup
	$(LOCK) --extra demo -o requirements.lock
	$(LOCK) --extra dev -o requirements-dev.lock

run: setup
	$(BIN)/modstream demo

lint: setup
	$(BIN)/ruff check modstream tests bench grafana examples
	$(BIN)/ruff format --check modstream tests bench grafana examples
	$(BIN)/lint-imports

# mypy over the package (configured in pyproject.toml): zero errors.
typecheck: setup
	$(BIN)/mypy

# The operations tests run a real Prometheus (Debian package `prometheus`, with promtool);
# the Kafka security tests make certificates with openssl; the OCR tests run Tesseract.
TOOLS = prometheus openssl tesseract-ocr tesseract-ocr-eng
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v openssl >/dev/null && command -v tesseract >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q --no-install-recommends $(TOOLS) >/dev/null \
	      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(TOOLS) >/dev/null; }; \
	  else echo "install the Debian packages $(TOOLS)" >&2; exit 1; fi; }

# The fast group: no broker, no worker processes, no Java. Marked kafka (tests/conftest.py):
# tests using a broker fixture, everything under tests/faults, *_kafka.py, LocalKafka users.
test-unit: setup
	$(BIN)/pytest -q -m "not kafka"

test: setup lint typecheck prometheus
	$(BIN)/modstream kafka start
	$(BIN)/pytest -q

bench: setup
	$(BIN)/modstream kafka start
	$(BIN)/python bench/throughput.py

bench-limit: setup
	$(BIN)/modstream kafka start
	$(BIN)/python bench/limit.py

# One transaction's cost, aiokafka as it is against the worker's producer (issue 13).
bench-transactions: setup
	$(BIN)/modstream kafka start
	$(BIN)/python bench/transactions.py

# The fault scenarios alone (they also run in make test): they assert counts (lost,
# duplicated, unexpected); their times are printed and appended to the report.
faults: setup
	$(BIN)/modstream kafka start
	mkdir -p .modstream
	MODSTREAM_FAULT_REPORT=.modstream/faults.jsonl $(BIN)/pytest -q -s tests/faults

# One worker's memory under a steady load, 30 minutes (issue 12).
soak: setup
	$(BIN)/modstream kafka start
	$(BIN)/python bench/soak.py 30 500

bench-text: setup
	$(BIN)/python bench/text.py

bench-video: setup
	$(BIN)/python bench/video.py

# Exchange sync beside a plain bank import of the same list (issue 16).
bench-exchange: setup
	$(BIN)/modstream kafka start
	$(BIN)/python bench/exchange_sync.py

# The HTTP API: lookups/s and hash+match/s, one and two server processes (issue 17).
bench-http: setup
	$(BIN)/modstream kafka start
	$(BIN)/python bench/http_api.py

bench-robustness: setup
	$(BIN)/python bench/robustness.py

# Text inside images: Tesseract's cost per image and what it reads, over 30 images (issue 15).
bench-ocr: setup
	$(BIN)/python bench/ocr.py

# The indexes measured against: python-threatexchange's and FAISS (its dependency).
bench-index: setup
	$(BIN)/python bench/match_index.py

# Rebuild the labelled corpus and retrain the packaged text model from it (deterministic).
text-model: setup
	$(BIN)/python data/text/build_corpus.py
	$(BIN)/modstream text train data/text/corpus.jsonl --out modstream/text/default_model.json

kafka-stop: setup
	$(BIN)/modstream kafka stop

clean:
	rm -rf $(VENV) .modstream .pytest_cache
