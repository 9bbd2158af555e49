#!/usr/bin/env bash
# The test command (README.md): installs what the tests need beyond cargo,
# then runs every test. Safe to run again; later runs reuse the build cache
# and the client venv.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build artifacts live outside the clone so a fresh checkout on the same
# machine rebuilds only what changed (a cold DataFusion build is long).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/panorama-target}"

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }

need_apt=()
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)  # a test certificate for TLS
# The client tests (tests/clients.rs): a private PostgreSQL server to compare
# catalogs with, psqlODBC behind unixODBC, pgjdbc and a JDK to compile the
# JDBC client, and Python with venv for psycopg, pandas and SQLAlchemy.
for package in postgresql odbc-postgresql unixodbc libpostgresql-jdbc-java python3-venv; do
    installed "$package" || need_apt+=("$package")
done
command -v javac >/dev/null 2>&1 || need_apt+=(default-jdk-headless)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if ((${#need_apt[@]})); then
    echo "installing: ${need_apt[*]}"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

# The Python client libraries, pinned, in a venv next to the build cache;
# pip runs again only when requirements.txt changes.
venv="$CARGO_TARGET_DIR/clients-venv"
requirements=tests/clients/requirements.txt
stamp="$venv/requirements.sha256"
wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "installing the Python client libraries into $venv"
    rm -rf "$venv"
    mkdir -p "$CARGO_TARGET_DIR"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet -r "$requirements"
    echo "$wanted" >"$stamp"
fi
export PANORAMA_TEST_PYTHON="$venv/bin/python"
PSQLODBC_DRIVER="$(dpkg -L odbc-postgresql | grep '/psqlodbcw\.so$' | head -n1)"
export PSQLODBC_DRIVER

cargo --version
cargo test --all-targets -- --test-threads 2
