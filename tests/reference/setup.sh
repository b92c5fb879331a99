#!/usr/bin/env bash
# Builds the reference environment once: a venv on Debian's python3 with the light
# dependencies, and the pinned reference wheels unpacked into $DIR/site (added to
# PYTHONPATH by the tests). Idempotent: a stamp with the requirements' hash skips work.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:?usage: setup.sh DIR}"
python="${LXGATE_REFERENCE_PYTHON:-/usr/bin/python3}"
stamp="$dir/.ready"
want="$(sha256sum "$here/requirements.txt" "$here/setup.sh" | sha256sum | cut -c1-16)"
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
echo "$want" > "$stamp"
