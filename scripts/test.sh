#!/usr/bin/env bash
# Install what the tests need and run them: lint, then unit and integration tests.
# Usage: scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# Ceph for the RADOS and RGW tests: python-rados is not on PyPI. Installing starts no
# daemon; the tests' fixtures start and stop a throwaway cluster (scripts/micro_ceph.py).
# Chromium for the web UI's browser test (Playwright drives Debian's build; no download).
# Prometheus for the metrics test, which runs the binary itself (the Debian service is not used).
# iproute2 (ip, tc) for the simulated WAN's network namespaces (tests/integration/test_wan.py),
# nftables (nft) to cut an etcd member off from the others there,
# rclone for the S3 front door's client test (tests/integration/test_s3_clients.py).
# Without root these tests are skipped with the reason.
debian_packages=(ceph-mon ceph-osd ceph-common python3-rados radosgw chromium prometheus iproute2 nftables rclone)
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for package in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "Installing ${missing[*]} (Debian) for the Ceph, browser and metrics tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # Everything was installed: a test that finds a dependency missing fails instead of skipping.
  export DYNOSTORE_REQUIRE_ALL="${DYNOSTORE_REQUIRE_ALL:-1}"
fi

# Podman, podman-compose and a local base image for the compose stack's test (tests/deploy);
# idempotent, about 1 s when already done. Without root that test is skipped with the reason.
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  scripts/containers-setup.sh
fi

python -m pip install --quiet --disable-pip-version-check -e '.[test]'

ruff check .
ruff format --check .
mypy dynostore tests bench scripts

status=0
python -m pytest --durations=20 "$@" || status=$?
# pytest exits 5 when it collected no tests: that is a failure here too.
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests" >&2
fi
exit "$status"
