#!/bin/bash
# The apache/kafka image's way: every KAFKA_FOO_BAR variable is foo.bar in server.properties; the
# storage is formatted on first start (a random cluster id, kept in the data volume), then the broker
# runs in the foreground.
set -euo pipefail
props=/tmp/server.properties
: > "$props"
while IFS='=' read -r name value; do
  case "$name" in
    KAFKA_*) key=${name#KAFKA_}; key=${key,,}; echo "${key//_/.}=$value" >> "$props" ;;
  esac
done < <(env)
java=(java -Xms256m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
      -cp '/opt/kafka/libs/*')
log_dir=$(sed -n 's/^log\.dirs=//p' "$props")
if [ ! -e "$log_dir/meta.properties" ]; then
  cid=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)
  "${java[@]}" kafka.tools.StorageTool format --cluster-id="$cid" -c "$props" --ignore-formatted
fi
exec "${java[@]}" kafka.Kafka "$props"
