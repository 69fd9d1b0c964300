#!/usr/bin/env bash
# Jars for the Spark job (Kafka source, s3a, Iceberg + SQLite JDBC) into $SMARTCITY_CACHE/spark-jars,
# resolved by Maven from deploy/spark/pom.xml at the versions of the installed pyspark and its
# bundled Hadoop, so the two can never drift apart. Fast no-op when the stamp for (pom, versions) is present.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${SMARTCITY_CACHE:-$PWD/.cache}"
OUT="$CACHE/spark-jars"
PY=.venv/bin/python
jars_dir=$("$PY" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')
spark_version=$("$PY" -c 'import pyspark; print(pyspark.__version__)')
spark_binary=$(echo "$spark_version" | cut -d. -f1,2)   # 4.1: iceberg-spark-runtime-4.1_2.13
hadoop_version=$(ls "$jars_dir" | sed -n 's/^hadoop-client-api-\(.*\)\.jar$/\1/p' | head -1)
[ -n "$hadoop_version" ] || { echo "35-spark-jars: cannot find hadoop-client-api in $jars_dir" >&2; exit 1; }
stamp="$OUT/.stamp-$(cat deploy/spark/pom.xml deploy/spark/settings.xml | sha1sum | cut -c1-12)-$spark_version-$hadoop_version"
[ -e "$stamp" ] && exit 0
command -v mvn >/dev/null 2>&1 || { echo "35-spark-jars: mvn is required (deploy/setup.d/10-apt.sh installs it)" >&2; exit 1; }
tmp="$OUT.tmp"
rm -rf "$tmp"
mvn -q -B -s deploy/spark/settings.xml -f deploy/spark/pom.xml \
  -Dspark.version="$spark_version" -Dspark.binary.version="$spark_binary" \
  -Dhadoop.version="$hadoop_version" -Djars.dir="$tmp" \
  dependency:copy-dependencies
# Swap in whole so a half-finished download never looks complete.
rm -rf "$OUT"
mv "$tmp" "$OUT"
touch "$stamp"
echo "35-spark-jars: spark $spark_version, hadoop $hadoop_version -> $OUT" >&2
