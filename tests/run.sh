#!/usr/bin/env bash
# The test command (README.md): installs what the tests need beyond cargo,
# then runs every test. Safe to run again; later runs reuse the build cache.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build artifacts live outside the clone so a fresh checkout on the same
# machine rebuilds only what changed (a cold DataFusion build is long).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/panorama-target}"

need_apt=()
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)  # a test certificate for TLS
if ((${#need_apt[@]})); then
    echo "installing: ${need_apt[*]}"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

cargo --version
cargo test --all-targets -- --test-threads 2
