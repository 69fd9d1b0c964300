# Mosquitto from Debian's package, laid out as the eclipse-mosquitto image (uid 1883, /mosquitto/...),
# for deploy/compose-local/override.yml where no registry of images is reachable (CI).
ARG BASE_IMAGE=localhost/debian-base:bookworm
FROM ${BASE_IMAGE}
RUN useradd --system --uid 1883 --user-group --no-create-home --shell /usr/sbin/nologin mosquitto \
 && apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto mosquitto-clients >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /mosquitto/config /mosquitto/data /mosquitto/auth /mosquitto/log \
 && chown -R 1883:1883 /mosquitto
EXPOSE 1883 8883
CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
