#!/usr/bin/env bash
# Installs github.com/krylovsk/mqtt-benchmark (the independent cross-check of bench/) into
# bench/.tools/bin with `go install` from the Go module proxy. The bench runs without it and
# says so; with it, throughput rows carry its figure next to ours.
#
# Usage: bench/tools/install-mqtt-benchmark.sh [VERSION]   (default: latest)
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-latest}"
if ! command -v go >/dev/null 2>&1; then
  echo "install-mqtt-benchmark: go is not installed (apt-get install golang-go)" >&2
  exit 1
fi
mkdir -p .tools/bin
if GOBIN="$PWD/.tools/bin" go install "github.com/krylovsk/mqtt-benchmark@${version}"; then
  echo "installed: $PWD/.tools/bin/mqtt-benchmark"
else
  status=$?
  echo "install-mqtt-benchmark: go install failed (status $status); the Go module proxy may not serve this module here." >&2
  echo "The bench still runs, cross-checking with Mosquitto's C clients only." >&2
  exit "$status"
fi
