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
# The console's browser test (tests/console.rs): Debian's chromium and its
# WebDriver, driven by Selenium from the venv below.
for package in postgresql odbc-postgresql unixodbc libpostgresql-jdbc-java python3-venv chromium chromium-driver; do
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
# Public SQL corpora for tests/corpus.rs (no SQL text may crash the server),
# unpacked next to the build cache, never committed: DataFusion's
# sqllogictest files from the datafusion-sqllogictest crate of the
# DataFusion version in Cargo.lock (cargo fetch of a throwaway package), and
# PostgreSQL's regression SQL from the copy of libpg_query that pglast's
# source archive on PyPI bundles. Each is fetched once per version.
corpora="$CARGO_TARGET_DIR/sql-corpora"
datafusion_version="$(awk '$0 == "name = \"datafusion\"" { getline; split($0, v, "\""); print v[2]; exit }' Cargo.lock)"
if [ ! -e "$corpora/datafusion/.fetched-$datafusion_version" ]; then
    echo "fetching DataFusion $datafusion_version's sqllogictest files into $corpora/datafusion"
    scratch="$(mktemp -d)"
    mkdir "$scratch/src"
    : >"$scratch/src/lib.rs"
    cat >"$scratch/Cargo.toml" <<EOF
[package]
name = "sql-corpora"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
datafusion-sqllogictest = { version = "=$datafusion_version", default-features = false }
EOF
    (cd "$scratch" && cargo fetch --quiet)
    crates=("${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"datafusion-sqllogictest-$datafusion_version.crate")
    rm -rf "$corpora/datafusion"
    mkdir -p "$corpora/datafusion"
    tar -xzf "${crates[0]}" -C "$corpora/datafusion" --strip-components=2 \
        "datafusion-sqllogictest-$datafusion_version/test_files"
    touch "$corpora/datafusion/.fetched-$datafusion_version"
    rm -rf "$scratch"
fi
pglast_version=8.8  # bundles libpg_query 18, PostgreSQL 18.6's regression SQL
if [ ! -e "$corpora/postgres/.fetched-$pglast_version" ]; then
    echo "fetching PostgreSQL's regression SQL (pglast $pglast_version) into $corpora/postgres"
    scratch="$(mktemp -d)"
    # The source archive straight from PyPI: `pip download --no-binary`
    # would build Cython from source to read the archive's metadata.
    "$venv/bin/python" - "$pglast_version" "$scratch" <<'PY'
import json, sys, urllib.request
version, folder = sys.argv[1], sys.argv[2]
name = f"pglast-{version}.tar.gz"
index = urllib.request.Request(
    "https://pypi.org/simple/pglast/",
    headers={"Accept": "application/vnd.pypi.simple.v1+json"},
)
with urllib.request.urlopen(index) as answer:
    url = next(f["url"] for f in json.load(answer)["files"] if f["filename"] == name)
urllib.request.urlretrieve(url, f"{folder}/{name}")
PY
    rm -rf "$corpora/postgres"
    mkdir -p "$corpora/postgres"
    tar -xzf "$scratch/pglast-$pglast_version.tar.gz" -C "$corpora/postgres" --strip-components=5 \
        "pglast-$pglast_version/libpg_query/test/sql/postgres_regress"
    touch "$corpora/postgres/.fetched-$pglast_version"
    rm -rf "$scratch"
fi
export PANORAMA_SQL_CORPORA="$corpora"

PSQLODBC_DRIVER="$(dpkg -L odbc-postgresql | grep '/psqlodbcw\.so$' | head -n1)"
export PSQLODBC_DRIVER

cargo --version
cargo test --all-targets -- --test-threads 2
