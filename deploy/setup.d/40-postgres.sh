#!/usr/bin/env bash
# PostgreSQL 15 from Debian: the warehouse's local stand-in for Redshift (deploy/local/postgres.py
# runs its own cluster on loopback; the system-wide one the package sets up is stopped and disabled).
# 15 is the first release with MERGE, which the warehouse load uses.
set -euo pipefail
have() {
  for b in /usr/lib/postgresql/*/bin/postgres; do
    [ -x "$b" ] || continue
    v=$(basename "$(dirname "$(dirname "$b")")")
    [ "$v" -ge 15 ] 2>/dev/null && return 0
  done
  return 1
}
have && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    postgresql-15 postgresql-client-15 >/dev/null; then
  echo "40-postgres: could not install postgresql-15 from the Debian archive (Debian 12 has it)" >&2
  exit 1
fi
# The package starts a system cluster on 5432; the project runs its own on a free port.
$SUDO systemctl disable --now postgresql >/dev/null 2>&1 || true
$SUDO pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
have || { echo "40-postgres: postgresql-15 installed but /usr/lib/postgresql/15/bin/postgres is missing" >&2; exit 1; }
