#!/usr/bin/env bash
# The helm CLI the chart tests run, pinned and built from the Go module proxy (helm 3.7+
# has no replace directives, so `go install` works). Idempotent: nothing is built when the
# pinned version is already there.
#   scripts/install-helm.sh [DIR]      default: .venv/bin (where the test fixtures look)
set -euo pipefail
VERSION=v3.21.4
cd "$(dirname "$0")/.."
dir="${1:-.venv/bin}"
if [ -x "$dir/helm" ] && [ "$("$dir/helm" version --template '{{.Version}}' 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi
command -v go >/dev/null || { echo "install-helm: Go is needed (go install)" >&2; exit 1; }
mkdir -p "$dir"
echo "building helm $VERSION into $dir"
# The version string is set by the linker, as helm's own Makefile does; without it
# `helm version` says v3.21+unreleased.
GOBIN="$(cd "$dir" && pwd)" GOFLAGS=-buildvcs=false \
  go install -ldflags "-X helm.sh/helm/v3/internal/version.version=$VERSION" "helm.sh/helm/v3/cmd/helm@$VERSION"
"$dir/helm" version --template '{{.Version}}'; echo
