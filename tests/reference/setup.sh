#!/usr/bin/env bash
# Builds the reference environment once: a venv on Debian's python3 with the light
# dependencies, and the pinned reference wheels unpacked into $DIR/site (added to
# PYTHONPATH by the tests). Idempotent: a stamp with the requirements' hash skips work.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:?usage: setup.sh DIR}"
python="${LXGATE_REFERENCE_PYTHON:-/usr/bin/python3}"
stamp="$dir/.ready"
want="$(sha256sum "$here/requirements.txt" "$here/setup.sh" "$here/endoreg_rust_backend.Cargo.lock" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
rm -rf "$dir"; mkdir -p "$dir/wheels" "$dir/site"
"$python" -m venv "$dir/venv" || { echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)" >&2; exit 1; }
pip="$dir/venv/bin/pip"
refs=$(sed -n 's/^reference: *//p' "$here/requirements.txt")
deps=$(grep -v -e '^#' -e '^reference:' -e '^$' "$here/requirements.txt")
# shellcheck disable=SC2086
"$pip" download -q --no-deps --python-version 3.12 --only-binary=:all: -d "$dir/wheels" $refs
# shellcheck disable=SC2086
"$pip" install -q $deps
for w in "$dir"/wheels/*.whl; do
  "$dir/venv/bin/python" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$w" "$dir/site"
done
# endoreg-db's compiled extension (endoreg_rust_backend: the anonymization-state rules
# its hub serializer applies, among others) ships for CPython 3.12 only, and its wheel
# carries the crate's source (rust/endoreg_rust_backend, as its sdist does). Built here
# from that source for this Python: the same code, another ABI tag. Dependencies are
# pinned by our own lockfile (cargo's resolution from crates.io). The build directory
# sits beside $dir so that a rebuilt venv does not compile the crate again.
crate="$dir/site/rust/endoreg_rust_backend"
cp "$here/endoreg_rust_backend.Cargo.lock" "$crate/Cargo.lock"
PYO3_PYTHON="$dir/venv/bin/python" CARGO_TARGET_DIR="$dir.rust-target" \
  cargo build -q --release --locked --lib --manifest-path "$crate/Cargo.toml" \
  || { echo "building endoreg_rust_backend from the endoreg-db wheel's rust/ source failed (needs cargo and crates.io)" >&2; exit 1; }
suffix="$("$dir/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
cp "$dir.rust-target/release/libendoreg_rust_backend.so" "$dir/site/endoreg_db/endoreg_rust_backend$suffix"
echo "$want" > "$stamp"
