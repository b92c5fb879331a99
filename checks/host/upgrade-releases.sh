#!/usr/bin/env bash
# Builds the releases scenario-upgrade.sh deploys, each from this checkout plus one
# change, into OUT (bin a is the release under test itself):
#   b  a migration that fails (one transaction: nothing of it stays)
#   c  an incompatible migration that succeeds, in a build whose smoke fails
#   d  a compatible migration
# Shares one cargo target dir and a debug-like profile (Cargo.toml [profile.twin]), so
# after the first variant only the lxgate crate compiles: release builds with LTO cost CI
# minutes the twin does not need, since it tests deploy's behaviour, not speed. Every
# variant is built from the same source directory inside the target dir: cargo and
# rustc's incremental cache see one package whose files changed, so the second and third
# variant (and the next run) reuse most of the first one's work; a fresh path per build
# would be a new package each time.
#   bash checks/host/upgrade-releases.sh BIN OUT
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=$(readlink -f "$1"); out=$2
mkdir -p "$out"
cp "$bin" "$out/a"
target=${LXGATE_VARIANT_TARGET:-$repo/target/twin-variants}
src=$target/variant-src
mkdir -p "$src"
for v in b c d; do
  if [ -x "$out/$v" ] && [ "$out/$v" -nt "$bin" ]; then continue; fi
  rm -rf "$src/tree"; mkdir -p "$src/tree"
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$src/tree")
  case $v in
    b) printf -- '-- previous release: incompatible (twin: a migration that fails)\nCREATE TABLE twin_b (x int);\nSELECT 1 / 0;\n' \
         > "$src/tree/migrations/9001_twin_fails.sql" ;;
    c) printf -- '-- previous release: incompatible (twin: drops a column the previous release reads)\nALTER TABLE centers DROP COLUMN name;\n' \
         > "$src/tree/migrations/9001_twin_contract.sql"
       # A broken build: its smoke always fails.
       sed -i 's|^    checks.push(sealed_round_trip(|    checks.push(Check::fail("twin release c", "this build fails smoke on purpose", "roll back"));\n    checks.push(sealed_round_trip(|' \
         "$src/tree/src/ops/smoke.rs"
       grep -q 'twin release c' "$src/tree/src/ops/smoke.rs" || { echo "variant c: smoke.rs patch did not apply" >&2; exit 1; } ;;
    d) printf -- '-- previous release: compatible (twin: a new table)\nCREATE TABLE twin_notes (x int);\n' \
         > "$src/tree/migrations/9001_twin_expand.sql" ;;
  esac
  (cd "$src/tree" && CARGO_TARGET_DIR=$target cargo build --profile twin --locked --bin lxgate >/dev/null)
  cp "$target/twin/lxgate" "$out/$v"
done
ls -l "$out"
