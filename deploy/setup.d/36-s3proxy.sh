#!/usr/bin/env bash
# S3Proxy, the local S3-compatible server (deploy/local/s3.py), into $SMARTCITY_CACHE/s3proxy: the
# `jar-with-dependencies` artifact of org.gaul:s3proxy on Maven Central (one runnable jar, 55 MB,
# Apache-2.0; the self-executing `s3proxy` file of its releases is not on Maven Central). The
# version is deploy/local/s3.py's S3PROXY_VERSION, so the code and the cache never disagree.
# Fast no-op when that jar is present.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${SMARTCITY_CACHE:-$PWD/.cache}"
OUT="$CACHE/s3proxy"
version=$(sed -n 's/^S3PROXY_VERSION = "\([^"]*\)".*/\1/p' deploy/local/s3.py)
[ -n "$version" ] || { echo "36-s3proxy: no S3PROXY_VERSION in deploy/local/s3.py" >&2; exit 1; }
jar="s3proxy-$version-jar-with-dependencies.jar"
[ -s "$OUT/$jar" ] && exit 0
command -v mvn >/dev/null 2>&1 || { echo "36-s3proxy: mvn is required (deploy/setup.d/10-apt.sh installs it)" >&2; exit 1; }
tmp="$OUT.tmp"
rm -rf "$tmp"
# The same Maven Central-only settings as the Spark jars (deploy/spark/settings.xml).
mvn -q -B -Dstyle.color=never -s deploy/spark/settings.xml \
  org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
  -Dartifact="org.gaul:s3proxy:$version:jar:jar-with-dependencies" -DoutputDirectory="$tmp"
[ -s "$tmp/$jar" ] || { echo "36-s3proxy: $jar was not downloaded" >&2; exit 1; }
# Swap in whole so a half-finished download never looks complete.
rm -rf "$OUT"
mv "$tmp" "$OUT"
echo "36-s3proxy: S3Proxy $version -> $OUT/$jar" >&2
