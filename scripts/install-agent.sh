#!/usr/bin/env bash
# Install meshagent (not editable) with its runtime extras into a virtualenv at PREFIX, and
# check the commands the Helm chart runs. The Dockerfile's install step is exactly this, and
# tests/integration/image runs it too, so the image's steps are exercised without Docker.
#   scripts/install-agent.sh PREFIX
set -euo pipefail
EXTRAS="zookeeper,etcd,thrift,grpc,http,tracing"
prefix="${1:?usage: $0 PREFIX}"
src="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"

"$python" -m venv "$prefix"
"$prefix/bin/pip" install -q --upgrade pip
# The dependencies and the package interpreted; then, where a C compiler is, the package
# again with the modules agent/compiled.py lists compiled by mypyc (setup.py), which
# type-checks against the installed dependencies (so: no build isolation).
MESHAGENT_PURE_PYTHON=1 "$prefix/bin/pip" install -q "$src[$EXTRAS]"
if command -v "${CC:-cc}" >/dev/null 2>&1 && [ "${MESHAGENT_PURE_PYTHON:-}" != 1 ]; then
  "$prefix/bin/pip" install -q "setuptools>=77" "mypy>=1.11" types-PyYAML
  "$prefix/bin/pip" install -q --no-build-isolation --no-deps --force-reinstall "$src"
fi

# What the chart's containers run: the agent, the iptables init step (its rules, printed
# only), the injector's argument parsing, the startup hold.
"$prefix/bin/meshagent" version
"$prefix/bin/meshagent" check-config "$src/examples/agent.yaml"
"$prefix/bin/meshagent" iptables install --dry-run --uid 1337 --gid 1337 >/dev/null
"$prefix/bin/meshagent" injector --help >/dev/null
"$prefix/bin/meshagent" wait-ready --help >/dev/null
