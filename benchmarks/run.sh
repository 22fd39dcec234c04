#!/usr/bin/env bash
# One command for every benchmark: benchmarks/run.sh [--smoke] [other options of benchmarks/run.py]
# Installs what it needs: Debian's wrk (apt-get) if absent, and HealthChain (the peer) into its own
# venv benchmarks/.venv-peers so that its dependencies never touch the project's .venv.
# Full mode writes BENCHMARKS.md at the repository root; --smoke writes to a temporary directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
HEALTHCHAIN_VERSION=0.16.1
smoke=0
for arg in "$@"; do [[ "$arg" == "--smoke" ]] && smoke=1; done

if [[ ! -x "$PY" ]]; then
  echo "run.sh: $PY not found: create the project venv first (make venv)" >&2
  exit 2
fi
if ! command -v wrk >/dev/null 2>&1; then
  if [[ "$smoke" == 1 ]]; then
    echo "run.sh: wrk not installed; smoke mode skips the wrk runs"
  elif [[ "$(id -u)" == 0 ]]; then
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq wrk >/dev/null
  fi
fi
# Key generation and token minting use cryptography and PyJWT, which the service already depends on.
"$PY" -c "import cryptography, jwt" || { echo "run.sh: cryptography/PyJWT missing from .venv" >&2; exit 2; }
if [[ "$smoke" == 0 ]]; then
  peers=benchmarks/.venv-peers
  if [[ ! -x "$peers/bin/python" ]] || ! "$peers/bin/python" -c "import healthchain" 2>/dev/null; then
    python3 -m venv "$peers"
    "$peers/bin/pip" install -q "healthchain==$HEALTHCHAIN_VERSION" \
      || echo "run.sh: HealthChain could not be installed; the report says so"
  fi
fi
exec "$PY" -m benchmarks.run "$@"
