#!/usr/bin/env bash
# Containers for tests/test_containers.py and tests/test_compose_up.py (issue 15): Debian's podman with runc, and a local base
# image made from Debian packages, since no registry of images is reachable from here.
#  1. podman, runc, debootstrap from Debian, when missing.
#  2. /etc/containers/containers.conf: podman's default rlimits (nofile 1M) cannot be set in a
#     container here, and crun fails on this machine's cgroup v1/v2 hybrid, so every run failed
#     until both were changed. Written only where the file does not set them already: a machine
#     whose administrator configured podman keeps that configuration.
#  3. localhost/debian-base:bookworm (python3, venv, CA certificates) by debootstrap from the
#     Debian mirror apt uses here, once: skipped when `podman image exists` says it is there.
# A machine that cannot run a container at all fails here, loudly: the container tests never skip.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${SMARTCITY_CACHE:-$PWD/.cache}"
BASE=localhost/debian-base:bookworm
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

# 1. packages --------------------------------------------------------------------------------------
need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
# Service names as host names in a compose network (CNI, the backend of Debian's podman 4.3).
[ -x /usr/lib/cni/dnsname ] || need+=(golang-github-containernetworking-plugin-dnsname)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      "${need[@]}" uidmap slirp4netns fuse-overlayfs >/dev/null; then
    echo "70-podman: could not install ${need[*]} from Debian's archive" >&2
    exit 1
  fi
fi

# 2. containers.conf (only what is not set already) ----------------------------------------------
conf=/etc/containers/containers.conf
$SUDO mkdir -p /etc/containers
[ -e "$conf" ] || $SUDO touch "$conf"
add_setting() {  # section key value: appended in its own section header unless key is set anywhere
  local section=$1 key=$2 value=$3
  grep -Eq "^[[:space:]]*$key[[:space:]]*=" "$conf" && return 0
  printf '\n# added by smartcity deploy/setup.d/70-podman.sh (see the comment there)\n[%s]\n%s = %s\n' \
    "$section" "$key" "$value" | $SUDO tee -a "$conf" >/dev/null
}
add_setting containers default_ulimits '["nofile=1024:20000", "nproc=4096:4096"]'
add_setting engine runtime '"runc"'

# 3. the local Debian base image, once ------------------------------------------------------------
if ! podman image exists "$BASE"; then
  # The Debian mirror apt uses here (deb822 .sources or a one-line sources.list).
  mirror=$(sed -n 's/^URIs:[[:space:]]*\(\S*debian\)\/\?[[:space:]]*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
           | grep -v security | head -1 || true)
  [ -n "$mirror" ] || mirror=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\(\S*\)[[:space:]]\+bookworm[[:space:]].*/\2/p' \
           /etc/apt/sources.list 2>/dev/null | head -1 || true)
  [ -n "$mirror" ] || { echo "70-podman: no Debian mirror found in /etc/apt/sources.list*" >&2; exit 1; }
  root="$CACHE/debian-base/rootfs"
  $SUDO rm -rf "$root" && mkdir -p "$(dirname "$root")"
  echo "70-podman: building $BASE with debootstrap from $mirror (about a minute)" >&2
  if ! out=$($SUDO debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$root" "$mirror" 2>&1); then
    echo "70-podman: debootstrap failed:" >&2; echo "$out" | tail -20 >&2; exit 1
  fi
  $SUDO rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  $SUDO tar -C "$root" -c . | podman import -q - "$BASE" >/dev/null
  $SUDO rm -rf "$root"
fi

# A container must start: fail here, with podman's own words, when it cannot.
if ! out=$(podman run --rm --network none "$BASE" python3 -c 'print("ok")' 2>&1) || [ "$out" != ok ]; then
  echo "70-podman: THIS MACHINE CANNOT RUN A CONTAINER with podman; tests/test_containers.py will fail:" >&2
  echo "$out" | tail -20 >&2
  exit 1
fi
