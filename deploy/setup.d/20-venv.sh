#!/usr/bin/env bash
set -euo pipefail
PY="${PYTHON:-python3.11}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -e "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[edge,bridge,spark,aws,lake,analytics,warehouse,dev]'
  touch "$stamp"
fi
