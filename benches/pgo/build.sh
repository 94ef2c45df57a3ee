#!/usr/bin/env bash
# Profile-guided optimisation of the `lb` binary (optional; see docs/performance.md, "PGO").
#
#   benches/pgo/build.sh            writes target/pgo/lb
#
# 1. builds lb instrumented (-Cprofile-generate), in its own target directory;
# 2. trains it with the side-by-side benchmark's own load (benches/compare/run.sh: keep-alive,
#    one connection per request, bulk, and 5,000 idle connections), one short run;
# 3. merges the profiles with llvm-profdata and builds lb again with them (-Cprofile-use).
#
# Needs llvm-profdata of the same LLVM as rustc: `rustup component add llvm-tools`; and what
# benches/compare/run.sh needs (nginx libnginx-mod-stream wrk python3). Takes two release
# builds (about 3-5 minutes each on 2 cores) and half a minute of load.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PROFDATA=$(find "$(rustc --print sysroot)" -name llvm-profdata -type f 2>/dev/null | head -1)
if [[ -z $PROFDATA ]]; then
  echo "llvm-profdata not found in $(rustc --print sysroot): rustup component add llvm-tools" >&2
  exit 1
fi
DATA=${PGO_DATA:-/tmp/lb-pgo-data}
rm -rf "$DATA"
mkdir -p "$DATA"

echo "== 1/3 instrumented build" >&2
RUSTFLAGS="-Cprofile-generate=$DATA" cargo build --release -q -p lb-cli --target-dir target/pgo-gen

echo "== 2/3 training load" >&2
# lb exits normally on SIGTERM (a graceful shutdown), which writes its profile.
LB_BIN_PREBUILT=1 LB_BIN="$ROOT/target/pgo-gen/release/lb" \
  benches/compare/run.sh -r 1 -d 3 -m lb >&2
ls "$DATA"/*.profraw >/dev/null 2>&1 || { echo "no profile was written to $DATA" >&2; exit 1; }

echo "== 3/3 optimised build" >&2
"$PROFDATA" merge -o "$DATA/lb.profdata" "$DATA"
RUSTFLAGS="-Cprofile-use=$DATA/lb.profdata" cargo build --release -q -p lb-cli --target-dir target/pgo-use
mkdir -p target/pgo
cp target/pgo-use/release/lb target/pgo/lb
echo "target/pgo/lb" 
