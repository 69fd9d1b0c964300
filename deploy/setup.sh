#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: system packages, the .venv, jars and binaries in .cache/.
# Every step lives in deploy/setup.d/NN-name.sh and is skipped quickly when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
export SMARTCITY_CACHE="${SMARTCITY_CACHE:-$PWD/.cache}"
mkdir -p "$SMARTCITY_CACHE"
for step in deploy/setup.d/*.sh; do
  start=$(date +%s)
  bash "$step"
  echo "setup: $(basename "$step") done in $(( $(date +%s) - start ))s" >&2
done
