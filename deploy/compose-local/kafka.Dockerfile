# Apache Kafka from the project's Maven-resolved jars (deploy/setup.d/30-kafka.sh) on Debian's Java,
# configured like the apache/kafka image (KAFKA_* environment -> server.properties), for
# deploy/compose-local/override.yml where no registry of images is reachable (CI).
# Context: a folder with libs/ (the jars) and kafka-entrypoint.sh (deploy/compose_local.py makes it).
ARG BASE_IMAGE=localhost/debian-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 1000 --user-group --create-home --home-dir /var/lib/kafka --shell /usr/sbin/nologin appuser \
 && mkdir -p /var/lib/kafka/data && chown -R 1000:1000 /var/lib/kafka
COPY libs/ /opt/kafka/libs/
COPY kafka-entrypoint.sh /opt/kafka/kafka-entrypoint.sh
USER 1000
EXPOSE 9092
ENTRYPOINT ["/bin/bash", "/opt/kafka/kafka-entrypoint.sh"]
