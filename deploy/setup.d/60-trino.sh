#!/usr/bin/env bash
# Trino (the engine of Amazon Athena) for the local stack's "local Athena" (deploy/local/trino.py):
# the server core, the iceberg + tpch plugins and the CLI from Maven Central (deploy/trino/pom.xml,
# strict checksums), unpacked into $SMARTCITY_CACHE/trino-VERSION/ (bin/ lib/ plugin/ cli/), plus
# the SQLite JDBC driver of the lake's catalog (from 35-spark-jars) in plugin/iceberg/. The tests
# use it, so CI installs it. Trino needs a newer Java than the rest of the project: the Java check
# runs first and every time (fast), and a machine without one fails here with the reason; it is
# never skipped. Fast no-op once the stamp for (pom, version) is present.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${SMARTCITY_CACHE:-$PWD/.cache}"
PY=.venv/bin/python
version=$("$PY" -c 'from deploy.local.trino import TRINO_VERSION; print(TRINO_VERSION)')
OUT="$CACHE/trino-$version"

# 1. A Java Trino can run on (prints the reason and exits 1 when there is none).
"$PY" -m deploy.local.trino --find-java >/dev/null

# 2. The server and plugins, once.
stamp="$OUT/.stamp-$(cat deploy/trino/pom.xml deploy/spark/settings.xml | sha1sum | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  command -v mvn >/dev/null || { echo "60-trino: mvn is required" >&2; exit 1; }
  tmp="$OUT.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp/archives"
  # -C: a checksum that does not match Maven Central's .sha1 fails the download.
  if ! out=$(mvn -q -B -C -Dstyle.color=never -s deploy/spark/settings.xml -f deploy/trino/pom.xml \
      -Dtrino.version="$version" -Dtrino.download.dir="$tmp/archives" dependency:copy 2>&1); then
    echo "60-trino: resolving Trino $version from Maven Central failed:" >&2
    echo "$out" >&2
    exit 1
  fi
  # The archives were copied from the local Maven repository: check them against the .sha1 files
  # Maven downloaded beside them (a repository filled earlier without -C is caught here too).
  m2="${MAVEN_REPO_LOCAL:-$HOME/.m2/repository}"
  for f in "$tmp"/archives/*; do
    name=$(basename "$f")
    artifact=${name%-"$version".*}
    sha_file="$m2/io/trino/$artifact/$version/$name.sha1"
    if [ -f "$sha_file" ]; then
      want=$(cut -c1-40 "$sha_file")
      got=$(sha1sum "$f" | cut -c1-40)
      [ "$want" = "$got" ] || { echo "60-trino: $name: sha1 $got, Maven Central says $want" >&2; exit 1; }
    fi
  done
  tar -xzf "$tmp/archives/trino-server-core-$version.tar.gz" -C "$tmp" --strip-components=1
  for plugin in iceberg tpch; do
    "$PY" -m zipfile -e "$tmp/archives/trino-$plugin-$version.zip" "$tmp/plugin"
    mv "$tmp/plugin/trino-$plugin-$version" "$tmp/plugin/$plugin"
  done
  mkdir -p "$tmp/cli"
  mv "$tmp/archives/trino-cli-$version-executable.jar" "$tmp/cli/"
  rm -rf "$tmp/archives"
  [ -d "$tmp/plugin/geospatial" ] || { echo "60-trino: no plugin/geospatial in trino-server-core $version" >&2; exit 1; }
  # Swap in whole so a half-finished download never looks complete.
  rm -rf "$OUT"
  mv "$tmp" "$OUT"
  touch "$stamp"
  echo "60-trino: trino $version -> $OUT" >&2
fi

# 3. The lake catalog's JDBC driver in the iceberg plugin: the one 35-spark-jars resolved (kept in
#    step with it on every run; Trino's plugin ships no SQLite driver).
sqlite_jar=$(ls "$CACHE"/spark-jars/sqlite-jdbc-*.jar 2>/dev/null | head -1 || true)
[ -n "$sqlite_jar" ] || { echo "60-trino: no sqlite-jdbc jar in $CACHE/spark-jars; run deploy/setup.d/35-spark-jars.sh" >&2; exit 1; }
if [ ! -e "$OUT/plugin/iceberg/$(basename "$sqlite_jar")" ]; then
  rm -f "$OUT"/plugin/iceberg/sqlite-jdbc-*.jar
  cp "$sqlite_jar" "$OUT/plugin/iceberg/"
fi
