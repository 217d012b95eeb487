# Tidings: `make demo` runs the shop on the embedded log; `make test` runs every test.
# Both create .venv and install what they need; `make test` also starts the servers.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: install demo demo-migration test lint unit services services-down browser asyncapi-tools bench fuzz chaos lock clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,kafka,nats,rabbitmq,aws,postgres,otlp-proto]'
	rm -f $(VENV)/.installed-* && touch $@

demo: install
	$(BIN)/tidings demo

# The legacy back office strangled and streamed into the shop through Debezium (needs
# PostgreSQL, Kafka and Kafka Connect: started here).
demo-migration: install
	scripts/services up postgres kafka connect
	$(BIN)/tidings demo shop.migration --broker kafka://127.0.0.1:9092

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install lint services browser asyncapi-tools
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest -q tests/unit

services:
	scripts/services up

services-down:
	scripts/services down

# Debian's Chromium for the dashboard's browser test (Playwright drives it; no download).
browser:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The AsyncAPI tools the asyncapi tests check documents with (npm, pinned by
# scripts/asyncapi/package-lock.json, into .tools/asyncapi; does nothing once installed).
asyncapi-tools:
	scripts/asyncapi-tools

bench: install services
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[bench]'
	$(BIN)/python -m bench

# A million garbled records through the codec and the consume path, plus Hypothesis batches
# through the shop's runtimes; writes bench/results/fuzz.json (about 5 minutes on 2 cores).
fuzz: install
	$(BIN)/python -m bench.fuzz --cases 1000000

# Proof under faults: 10,000 orders to the shop (two processes per service) on three-node
# NATS and Kafka clusters while a seeded schedule kills services, leaders and brokers, cuts
# links and crashes PostgreSQL; writes bench/results/chaos.json (docs/chaos.md). Long:
# about 30 minutes per engine on 2 cores (8 orders/s: what the shop kept up with there).
# CHAOS_ARGS=--seed 3 repeats another schedule.
CHAOS_ARGS ?=
chaos: install
	scripts/services up postgres nats-cluster kafka-cluster toxiproxy
	$(BIN)/python -m bench.chaos --engine nats --rate 8 --settle 900 $(CHAOS_ARGS)
	$(BIN)/python -m bench.chaos --engine kafka --rate 8 --settle 900 $(CHAOS_ARGS)

# Re-pin every dependency (run after changing pyproject.toml).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q '.[dev,kafka,nats,rabbitmq,aws,postgres,otlp-proto,bench]'
	.lock-venv/bin/python -m pip freeze --exclude tidings > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .tidings .tools .pytest_cache .mypy_cache .ruff_cache
