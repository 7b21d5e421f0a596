#!/usr/bin/env bash
# Install the Debian packages a purpose needs, only those missing; `apt-get update` once.
#   scripts/install-system-deps.sh test    every program the test suite starts; the list must
#                                          match tests/fixtures/programs.py (a unit test checks)
#   scripts/install-system-deps.sh bench   baselines for the benchmarks (HAProxy, wrk, h2load)
set -euo pipefail

case "${1:-test}" in
  test)  packages=(zookeeper etcd-server openjdk-17-jdk-headless maven nginx curl git gcc iptables iproute2 util-linux chromium chromium-driver prometheus) ;;
  bench) packages=(nginx haproxy wrk nghttp2-client) ;;
  *) echo "usage: $0 test|bench" >&2; exit 2 ;;
esac

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
