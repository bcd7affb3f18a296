# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint run clean

$(BIN)/sluiceway: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# ministack (a faster SQS with AWS's FIFO semantics) pins botocore, so it gets its own virtualenv.
.venv-ministack/bin/ministack:
	$(PYTHON) -m venv .venv-ministack
	.venv-ministack/bin/pip install --quiet ministack==1.5.33

# kinesalite (a Kinesis emulator that reshards as Kinesis does) for the stream tests.
node_modules/kinesalite/cli.js:
	npm install --no-save --no-audit --no-fund kinesalite@3.3.3

demo: $(BIN)/sluiceway
	$(BIN)/sluiceway demo

test: $(BIN)/sluiceway .venv-ministack/bin/ministack node_modules/kinesalite/cli.js
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

run: $(BIN)/sluiceway
	$(BIN)/sluiceway run

clean:
	rm -rf $(VENV) .venv-ministack node_modules .pytest_cache sluiceway.db
