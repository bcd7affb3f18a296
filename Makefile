# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint run clean bench java prometheus

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

# DynamoDB Local (the local DynamoDB that AWS ships: a jar, run by java) for the tests of its own
# ARNs. It ships inside the npm package amplify-dynamodb-simulator; only the package itself is
# unpacked (65 MB), not its Node dependencies, which the tests do not use.
DYNAMODB_LOCAL_VERSION := 2.9.30
DYNAMODB_LOCAL := .dynamodb-local/package/emulator/DynamoDBLocal.jar

$(DYNAMODB_LOCAL):
	mkdir -p .dynamodb-local
	cd .dynamodb-local && npm pack --silent amplify-dynamodb-simulator@$(DYNAMODB_LOCAL_VERSION) >/dev/null \
		&& tar -xzf amplify-dynamodb-simulator-$(DYNAMODB_LOCAL_VERSION).tgz \
		&& rm amplify-dynamodb-simulator-$(DYNAMODB_LOCAL_VERSION).tgz
	touch $@

# A Java runtime for DynamoDB Local, from the distribution's packages when there is none.
java:
	@command -v java >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends default-jre-headless; }

# Prometheus (Debian's package) evaluates the Grafana dashboard's queries against the compose
# stack's processes in tests/test_compose_stack.py. The package's own service is stopped (the test
# starts its own, and the stack's Prometheus wants port 9090); without apt-get the test skips.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 \
	  && $(SUDO) apt-get update -qq \
	  && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
	  && { $(SUDO) systemctl disable --now prometheus >/dev/null 2>&1 || true; }; \
	} || echo "prometheus could not be installed: tests/test_compose_stack.py will skip"

demo: $(BIN)/sluiceway
	$(BIN)/sluiceway demo

test: $(BIN)/sluiceway .venv-ministack/bin/ministack node_modules/kinesalite/cli.js java $(DYNAMODB_LOCAL) prometheus
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# Benchmark peers and tools live in bench/ so they never touch the service's environment.
bench/.venv-peers/.installed:
	$(PYTHON) -m venv bench/.venv-peers
	bench/.venv-peers/bin/pip install --quiet async-kinesis==3.0.1 orjson matplotlib py-spy
	touch $@

bench/node_modules/sqs-consumer/package.json:
	npm install --prefix bench --no-save --no-audit --no-fund sqs-consumer@14.2.8 @aws-sdk/client-sqs@3

# Every benchmark, side by side with its peers (about 10 minutes); results in bench/results/.
bench: $(BIN)/sluiceway .venv-ministack/bin/ministack node_modules/kinesalite/cli.js bench/.venv-peers/.installed bench/node_modules/sqs-consumer/package.json
	$(BIN)/python -m bench

run: $(BIN)/sluiceway
	$(BIN)/sluiceway run

clean:
	rm -rf $(VENV) build .venv-ministack node_modules .dynamodb-local .pytest_cache sluiceway.db bench/.venv-peers bench/node_modules bench/results
