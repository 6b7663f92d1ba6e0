#!/usr/bin/env bash
# Installs the Debian bookworm packages hydra needs, only those missing.
#   deploy/install-deps.sh          build + run
#   deploy/install-deps.sh --test   also what the test suite drives (curl, openssl, kcat, python3-websockets,
#                                   python3-prometheus-client, clang for fuzzing, chromium)
#   deploy/install-deps.sh --bench  also the peers of tests/bench/send.sh (nginx-light + Nchan, kcat, curl),
#                                   gnuplot-nox for the soak plot (tests/soak/soak.sh) and valgrind
#                                   (tests/bench/instructions.sh)
set -euo pipefail

packages=(cmake make g++ pkg-config
          libpoco-dev libssl-dev librdkafka-dev libsqlitecpp-dev libsqlite3-dev nlohmann-json3-dev libboost-test-dev
          libsystemd-dev libmimalloc-dev liburing-dev)
if [[ "${1:-}" == "--bench" ]]; then
    packages+=(nginx-light libnginx-mod-nchan kcat curl gnuplot-nox valgrind)
fi
if [[ "${1:-}" == "--test" ]]; then
    packages+=(curl openssl kcat python3 python3-websockets python3-prometheus-client clang libclang-rt-14-dev chromium)
    # Node may come from elsewhere than Debian (it ships its own npm): only install it when missing.
    command -v node >/dev/null || packages+=(nodejs)
    command -v npm >/dev/null || packages+=(npm)
    command -v systemd-analyze >/dev/null || packages+=(systemd)  # deploy.systemd_unit
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "installing: ${missing[*]}" >&2
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
