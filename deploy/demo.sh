#!/usr/bin/env bash
# The README's main command: set up what is missing, then run the whole pipeline on a simulated trip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
exec .venv/bin/python -m deploy.demo "$@"
