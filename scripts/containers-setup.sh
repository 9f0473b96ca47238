#!/usr/bin/env bash
# Make this Debian machine able to build and run the compose stack (docker-compose.yml)
# with podman, when no image registry can be reached. Run as root; idempotent: every
# step checks first and does nothing when already done (a second run takes ~1 s).
#
#   1. Debian packages: podman, runc, mmdebstrap (apt).
#   2. /etc/containers/containers.conf: limits this machine allows, runc + cgroupfs,
#      and the host network as the default for `podman run` and `podman build`.
#   3. podman-compose from PyPI in /opt/podman-compose (Debian's 1.0.3 makes a bridge
#      network even for services on the host network), linked into /usr/local/bin.
#   4. A local base image, $DYNOSTORE_BASE_IMAGE (localhost/dynostore-base:bookworm):
#      Debian's minimal root file system with Python 3.11 and pip, made by mmdebstrap
#      from the machine's own apt sources and loaded with `podman import`. The
#      Dockerfiles build FROM it (`--build-arg BASE_IMAGE=...`), so nothing is pulled.
#
# docs/deployment.md explains each setting. Remove what this made:
#   podman rmi localhost/dynostore-base:bookworm; rm -r /opt/podman-compose
set -euo pipefail

base_image=${DYNOSTORE_BASE_IMAGE:-localhost/dynostore-base:bookworm}
compose_version=1.6.0
conf=/etc/containers/containers.conf
marker="# Written by DynoStore's scripts/containers-setup.sh"
export DEBIAN_FRONTEND=noninteractive

say() { echo "containers-setup: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  say "run me as root (podman needs it on this machine)"
  exit 1
fi

# 1. Packages ------------------------------------------------------------------------
missing=()
for package in podman runc mmdebstrap; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} (Debian)"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. containers.conf -----------------------------------------------------------------
# Containers may not raise their limits above this process's hard limits (root has no
# CAP_SYS_RESOURCE here), and podman caps its own RLIMIT_NPROC at 32768 before starting
# the runtime: podman's defaults (1048576) fail with "setrlimit ...: Operation not permitted".
nofile=$(awk '/^Max open files/ {print $5}' /proc/self/limits)
nproc=$(awk '/^Max processes/ {print $4}' /proc/self/limits)
[ "$nofile" = unlimited ] && nofile=1048576
if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
wanted=$(cat <<EOF
$marker
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]
# Every container and every build step shares the host's network: no bridge is ever made.
netns = "host"

[engine]
# crun fails on a hybrid cgroup v1/v2 layout; runc with cgroupfs works with or without systemd.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
)
if [ ! -e "$conf" ] || head -n 1 "$conf" | grep -qxF "$marker"; then
  if [ "$(cat "$conf" 2>/dev/null)" != "$wanted" ]; then
    say "writing $conf"
    mkdir -p "$(dirname "$conf")"
    printf '%s\n' "$wanted" >"$conf.tmp"
    mv "$conf.tmp" "$conf"
  fi
else
  say "keeping $conf (not written by this script); it needs what docs/deployment.md lists"
fi

# 3. podman-compose ------------------------------------------------------------------
if ! /opt/podman-compose/bin/podman-compose version 2>/dev/null | grep -q "version $compose_version"; then
  say "installing podman-compose $compose_version (PyPI) in /opt/podman-compose"
  /usr/bin/python3 -m venv /opt/podman-compose
  /opt/podman-compose/bin/pip install --quiet --disable-pip-version-check "podman-compose==$compose_version"
fi
[ "$(readlink /usr/local/bin/podman-compose 2>/dev/null)" = /opt/podman-compose/bin/podman-compose ] ||
  ln -sf /opt/podman-compose/bin/podman-compose /usr/local/bin/podman-compose

# 4. Base image ----------------------------------------------------------------------
if ! podman image exists "$base_image"; then
  say "building $base_image (mmdebstrap, about a minute)"
  rootfs=$(mktemp -d /tmp/dynostore-base.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  # The machine verifies TLS downloads against extra CA certificates it keeps in
  # /usr/local/share/ca-certificates: copy them in, or pip in a build cannot reach PyPI.
  # Without EXTERNALLY-MANAGED, `pip install` works outside a venv, as in python:3.11-slim.
  mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --customize-hook='cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" 2>/dev/null || true' \
    --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    --customize-hook='ln -sf python3 "$1/usr/bin/python"' \
    bookworm "$rootfs/rootfs.tar"
  podman import --quiet --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
    "$rootfs/rootfs.tar" "$base_image" >/dev/null
  podman run --rm "$base_image" python -c 'import ssl, venv' >/dev/null
  say "built $base_image"
fi
