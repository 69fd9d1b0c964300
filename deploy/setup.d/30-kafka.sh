#!/usr/bin/env bash
# Apache Kafka broker jars from Maven Central into $SMARTCITY_CACHE/kafka/libs (resolved once).
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${SMARTCITY_CACHE:-$PWD/.cache}"
dest="$CACHE/kafka/libs"
stamp="$CACHE/kafka/.resolved-$(sha1sum deploy/kafka/pom.xml | cut -c1-12)"
[ -e "$stamp" ] && exit 0
command -v java >/dev/null || { echo "30-kafka: java (17+) is required" >&2; exit 1; }
command -v mvn >/dev/null || { echo "30-kafka: mvn is required" >&2; exit 1; }
rm -rf "$dest" && mkdir -p "$dest"
if ! out=$(mvn -q -B -Dstyle.color=never -f deploy/kafka/pom.xml dependency:copy-dependencies \
    -DoutputDirectory="$dest" -DincludeScope=runtime 2>&1); then
  echo "30-kafka: resolving Kafka jars from Maven Central failed:" >&2
  echo "$out" >&2
  exit 1
fi
rm -f "$CACHE"/kafka/.resolved-*
touch "$stamp"
