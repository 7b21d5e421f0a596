#!/usr/bin/env bash
# h2spec, the HTTP/2 conformance tester the suite runs against the agent's HTTP/2
# listeners, pinned and built from the Go module proxy (v2.2.1 has no go.mod of its own:
# the proxy serves it as +incompatible). Idempotent: nothing is built when it is there.
#   scripts/install-h2spec.sh [DIR]      default: .venv/bin (where the test fixtures look)
set -euo pipefail
VERSION=v2.2.1+incompatible
cd "$(dirname "$0")/.."
dir="${1:-.venv/bin}"
stamp="$dir/.h2spec-$VERSION"
if [ -x "$dir/h2spec" ] && [ -e "$stamp" ]; then
  exit 0
fi
command -v go >/dev/null || { echo "install-h2spec: Go is needed (go install)" >&2; exit 1; }
mkdir -p "$dir"
echo "building h2spec $VERSION into $dir"
GOBIN="$(cd "$dir" && pwd)" GOFLAGS=-buildvcs=false \
  go install "github.com/summerwind/h2spec/cmd/h2spec@$VERSION"
touch "$stamp"
