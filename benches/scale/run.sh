#!/usr/bin/env bash
# lb with 10,000 backends: start-up, reload, /metrics and /stats, memory per backend.
#
#   benches/scale/run.sh [-n BACKENDS] [-r RUNS] [-k REPEATS] [-i INTERVAL]
#
# Each run (-r, default 3) starts lb on a generated configuration file in /tmp/lb-scale: BACKENDS
# (-n, default 10000) literal addresses 127.x.y.z:9 where nothing listens, so that their health
# checks are refused at once and they go down after `fall` checks, plus 3 real HTTP backends
# that stay up and carry the client traffic. Health checks run every INTERVAL (-i, default 2s,
# lb's default): the benchmark measures lb with its checker busy, as in production. Then each
# item is measured REPEATS times (-k, default 5); see drive.py for what each is. A second set
# of runs with 0 refusing backends gives the memory baseline: memory per backend is
# (RSS with BACKENDS - RSS with 0) / BACKENDS, both once the health checks have settled.
#
# Builds lb in release unless LB_BIN_PREBUILT=1 (then LB_BIN, default target/release/lb).
# Needs python3. Everything binds 127.0.0.1 on free ports; every process started is stopped
# by its PID at the end.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
N=10000 RUNS=3 REPEATS=5 INTERVAL=2s
while getopts "n:r:k:i:" opt; do
  case $opt in n) N=$OPTARG ;; r) RUNS=$OPTARG ;; k) REPEATS=$OPTARG ;; i) INTERVAL=$OPTARG ;; *) exit 2 ;; esac
done
command -v python3 >/dev/null || { echo "missing python3" >&2; exit 1; }
LB_BIN=${LB_BIN:-$ROOT/target/release/lb}
[[ -n ${LB_BIN_PREBUILT:-} ]] || (cd "$ROOT" && cargo build --release -q -p lb-cli)
W=/tmp/lb-scale
mkdir -p $W
# 20,000 health-check sockets per interval, a few in TIME_WAIT: more descriptors than the usual
# soft limit of 1024 (lb raises its own to the hard limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

DRIVER=
cleanup() { [[ -n $DRIVER ]] && kill "$DRIVER" 2>/dev/null && wait "$DRIVER" 2>/dev/null; true; }
trap cleanup EXIT
RESULTS=$W/results.txt
: > $RESULTS
for n in "$N" 0; do
  echo "== $n refusing backends + 3 real, $RUNS runs" >&2
  python3 "$HERE/drive.py" "$LB_BIN" $W "$n" "$RUNS" "$REPEATS" "$INTERVAL" > $W/run-$n.txt &
  DRIVER=$!
  tail -f --pid=$DRIVER $W/run-$n.txt >&2 &
  wait $DRIVER || { echo "the driver failed (lb's errors: $W/lb.err)" >&2; exit 1; }
  DRIVER=
  sed "s/^/$n /" $W/run-$n.txt >> $RESULTS
done

median() { # item [backends] -> median over every run and repeat
  awk -v item="$1" -v n="${2:-$N}" '
    $1 == n && $3 == item { v[++k] = $4 }
    END { if (!k) { print "-"; exit } for (i = 2; i <= k; i++) { x = v[i]; for (j = i - 1; j > 0 && v[j] > x; j--) v[j+1] = v[j]; v[j+1] = x }
      m = k % 2 ? v[(k+1)/2] : (v[k/2] + v[k/2+1]) / 2; printf "%.1f", m }' $RESULTS
}
maxof() { awk -v item="$1" -v n="$N" '$1 == n && $3 == item && $4 > m { m = $4 } END { printf "%.1f", m }' $RESULTS; }

echo
echo "medians over $RUNS runs x $REPEATS repeats, $N refusing backends + 3 real, checks every $INTERVAL"
printf "%-44s %10s %8s\n" item median target
printf "%-44s %10s %8s\n" "start: exec to the port bound (ms)" "$(median start_bound)" 500
printf "%-44s %10s %8s\n" "start: exec to accepting, READY=1 (ms)" "$(median start_ready)" 500
printf "%-44s %10s %8s\n" "start: exec to all refusing backends down (ms)" "$(median settle)" -
printf "%-44s %10s %8s\n" "reload, SIGHUP, one weight changed (ms)" "$(median hup)" 50
printf "%-44s %10s %8s\n" "reload, POST /command (ms)" "$(median post)" 50
printf "%-44s %10s %8s\n" "reload, lb ctl reload, process run (ms)" "$(median ctl)" 50
printf "%-44s %10s %8s\n" "reload, SIGHUP, no change (ms)" "$(median nochange)" 50
printf "%-44s %10s %8s\n" "reload, SIGHUP, one address replaced (ms)" "$(median swap)" 50
printf "%-44s %10s %8s\n" "GET /metrics (ms)" "$(median metrics)" 100
printf "%-44s %10s %8s\n" "GET /stats (ms)" "$(median stats)" 100
printf "%-44s %10s %8s\n" "/metrics size (KB)" "$(awk -v m="$(median metrics_bytes)" 'BEGIN{printf "%.0f", m/1024}')" -
printf "%-44s %10s %8s\n" "/stats size (KB)" "$(awk -v m="$(median stats_bytes)" 'BEGIN{printf "%.0f", m/1024}')" -
printf "%-44s %10s %8s\n" "new connection during a reload, slowest (ms)" "$(maxof conn_during_reload_max)" -
printf "%-44s %10s %8s\n" "new connection otherwise, slowest (ms)" "$(maxof conn_outside_max)" -
printf "%-44s %10s %8s\n" "client connections failed" "$(maxof conn_failed)" 0
rss_n=$(median rss_kb "$N") rss_0=$(median rss_kb 0)
printf "%-44s %10s %8s\n" "RSS with $N (MB)" "$(awk -v k="$rss_n" 'BEGIN{printf "%.1f", k/1024}')" -
printf "%-44s %10s %8s\n" "RSS with 0 (MB)" "$(awk -v k="$rss_0" 'BEGIN{printf "%.1f", k/1024}')" -
[[ $N -gt 0 ]] && printf "%-44s %10s %8s\n" "memory per backend (bytes)" "$(awk -v a="$rss_n" -v b="$rss_0" -v n="$N" 'BEGIN{printf "%.0f", (a-b)*1024/n}')" -
