# Two commands on a fresh machine: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
COMPILED_STAMP := $(VENV)/.compiled-stamp
# The modules setup.py compiles with mypyc (listed in agent/compiled.py).
COMPILED_SRC := $(shell sed -n 's/^    "\(.*\.py\)",$$/\1/p' agent/compiled.py)
CONFIG ?= examples/agent.yaml

.PHONY: compiled run demo test test-deps venv system-deps peers helm h2spec otelcol lint typecheck unit integration openapi fuzz bench clean

# First the dependencies (mypy among them: it brings mypyc) with the package interpreted...
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	MESHAGENT_PURE_PYTHON=1 $(BIN)/pip install -q -e '.[test,zookeeper,etcd,nacos,thrift,grpc,http]'
	$(BIN)/pip install -q 'setuptools>=77'  # what the build below runs (no build isolation)
	touch $@

## ...then the listed modules compiled in place with mypyc (setup.py), again whenever one
## of them changes; interpreted where there is no C compiler or MESHAGENT_PURE_PYTHON=1.
$(COMPILED_STAMP): $(STAMP) setup.py agent/compiled.py $(COMPILED_SRC)
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .
	touch $@

compiled: $(COMPILED_STAMP)

venv: $(COMPILED_STAMP)

## Run the agent on the embedded registry.
run: venv
	$(BIN)/meshagent run -c $(CONFIG)

## The headline in one command (after `make test`): ZooKeeper, the Java Dubbo provider and
## the agent; prints the curl line that calls the Java service; Ctrl-C stops everything.
demo: venv system-deps
	$(BIN)/python scripts/demo.py

system-deps:
	scripts/install-system-deps.sh test

## Build the Java (and later Go) peers the interop tests run against.
peers: system-deps
	mvn -q -B -f tests/interop/java/hessian-vectors/pom.xml package
	mvn -q -B -f tests/interop/java/dubbo-peer/pom.xml package
	mvn -q -B -f tests/interop/java/thrift-peer/pom.xml package
	mvn -q -B -f tests/interop/nacos/pom.xml package

## The pinned helm CLI the chart tests run (built with go install; instant when present).
helm: venv
	scripts/install-helm.sh

## h2spec, the HTTP/2 conformance tester (built with go install; instant when present).
h2spec: venv
	scripts/install-h2spec.sh

## The OpenTelemetry Collector the tracing tests export to (built with the collector's
## builder from the Go module proxy, ~8 minutes on two cores when cold; then cached).
otelcol: venv
	$(BIN)/python -c 'from tests.fixtures.otel_collector import build_collector; print(build_collector())'

## What the suite needs besides Python packages, built side by side: the Maven builds and
## the two Go builds take minutes each on a cold machine.
test-deps: venv system-deps
	$(MAKE) -j3 peers helm h2spec otelcol

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

## Regenerate openapi/openapi.yaml from the app (a test fails when it is stale).
openapi: venv
	$(BIN)/python -m openapi.generate

## The whole suite: lint, types, unit, contract, integration, interop.
test: test-deps lint typecheck
	$(BIN)/pytest -q

unit: venv
	$(BIN)/pytest -q tests/unit

integration: test-deps
	$(BIN)/pytest -q tests/integration tests/interop tests/contract

## Benchmarks (not tests): each prints medians and ratios against peers run in the same rounds.
## Coverage-guided fuzzing of every decoder (fuzz/), interpreted so that atheris sees
## coverage: FUZZ_SECONDS per target (default 60). Outside CI.
FUZZ_SECONDS ?= 60
fuzz: venv
	$(BIN)/pip install -q -e '.[fuzz]'
	MESHAGENT_PURE_PYTHON=1 $(BIN)/python -m fuzz.run --all $(FUZZ_SECONDS)

bench: venv peers
	scripts/install-system-deps.sh bench
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/tcp.py
	PYTHONPATH=. $(BIN)/python -m bench.registry
	$(BIN)/python bench/dubbo.py
	$(BIN)/python bench/dubbo_invoke.py
	$(BIN)/python bench/hessian2.py
	$(BIN)/python bench/thrift.py
	$(BIN)/python bench/grpc_proxy.py
	$(BIN)/python bench/http_proxy.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build
	find agent plugins -name '*.so' -delete; rm -f *__mypyc*.so
