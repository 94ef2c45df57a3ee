#!/usr/bin/env bash
# Side-by-side benchmark of lb against HAProxy and nginx (stream), on loopback.
#
#   benches/compare/run.sh [-r RUNS] [-d SECONDS] [-t TESTS] [-m] [TARGET...]
#
# Targets: direct (no balancer: the physical limit), haproxy, nginx, lb (default: all), and
# lbalt (a second lb command, LB_ALT_CMD, for A/B comparisons).
# Each run measures, for each target in turn and with wrk (one thread):
#   keep-alive requests/s and p99 latency (50 connections, small responses),
#   new-connection requests/s and p99 (Connection: close: one TCP connection per request),
#   bulk MB/s (1 MiB responses over 8 connections),
#   and with `-t up` (not run by default) upload MB/s (1 MiB request bodies over 8 connections).
# The machine is noisy, so targets are compared within a run, runs are repeated (-r, default 3)
# and medians printed, with the balancer's CPU time per request (per MB for bulk), which depends
# much less than throughput on other load. -m also measures resident memory with 5,000 idle
# connections held. -t runs only some of the tests, comma-separated (`-t bulk`, `-t ka,close`),
# for more samples of one in the same time.
# Needs: nginx libnginx-mod-stream haproxy wrk python3 (Debian packages); builds lb in release.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUNS=3 DUR=5 MEM=0 TESTS="ka close bulk"
while getopts "r:d:t:m" opt; do
  case $opt in r) RUNS=$OPTARG ;; d) DUR=$OPTARG ;; t) TESTS=${OPTARG//,/ } ;; m) MEM=1 ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
TARGETS=${*:-direct haproxy nginx lb}
for tool in nginx haproxy wrk python3; do
  command -v $tool >/dev/null || { echo "missing $tool: apt-get install nginx libnginx-mod-stream haproxy wrk" >&2; exit 1; }
done
W=/tmp/lb-compare
mkdir -p $W
[[ -f $W/big.bin ]] || head -c 1048576 /dev/urandom > $W/big.bin
LB_BIN=${LB_BIN:-$ROOT/target/release/lb}
[[ -n ${LB_BIN_PREBUILT:-} ]] || (cd "$ROOT" && cargo build --release -q -p lb-cli)

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }

nginx -c "$HERE/backends.nginx.conf" -e $W/backends.err & PIDS+=($!)
for p in 9001 9002 9003; do wait_port $p || { echo "backend $p did not start" >&2; exit 1; }; done

start() { # target -> PORT, LBPID
  LBPID=
  case $1 in
    direct) PORT=9001 ;;
    haproxy) PORT=18081; haproxy -f "$HERE/haproxy.cfg" -db >$W/haproxy.log 2>&1 & LBPID=$! ;;
    nginx) PORT=18082; nginx -c "$HERE/nginx-stream.conf" -e $W/lb-nginx.err & LBPID=$! ;;
    lb) PORT=18083
        ${LB_CMD:-$LB_BIN --host 127.0.0.1 --port 18083 --backend 127.0.0.1:9001 --backend 127.0.0.1:9002 --backend 127.0.0.1:9003 --log-file $W/lb.log} -q </dev/null >$W/lb.out 2>&1 &
        LBPID=$! ;;
    # A second lb command on port 18084, to compare two builds or two sets of flags in one run:
    # LB_ALT_CMD="path/to/lb --port 18084 ... --workers 1" run.sh lb lbalt
    lbalt) PORT=18084; [[ -n ${LB_ALT_CMD:-} ]] || { echo "lbalt: set LB_ALT_CMD" >&2; return 1; }
        $LB_ALT_CMD -q </dev/null >$W/lbalt.out 2>&1 & LBPID=$! ;;
    *) echo "unknown target $1" >&2; return 1 ;;
  esac
  [[ -n $LBPID ]] && PIDS+=($LBPID)
  wait_port $PORT || { echo "$1 did not listen on $PORT" >&2; return 1; }
  sleep 0.3
}
stop() { [[ -n ${LBPID:-} ]] && { kill $LBPID 2>/dev/null; wait $LBPID 2>/dev/null || true; }; LBPID=; }
pids_of() { # the balancer's processes (nginx has workers)
  [[ -n $LBPID ]] || return 0
  echo $LBPID $(pgrep -P $LBPID || true)
}

# CPU time (clock ticks) used so far by the balancer's processes, all threads.
cpu_ticks() {
  local total=0 p
  for p in $(pids_of); do
    [[ -r /proc/$p/stat ]] && total=$((total + $(awk '{print $14 + $15}' /proc/$p/stat)))
  done
  echo $total
}
HZ=$(getconf CLK_TCK)

# wrk output -> "rps p99_ms MBps errors"
num() {
  awk '
    /Requests\/sec/ {rps=$2}
    $1=="99%" {v=$2; if (v ~ /us$/) {sub("us","",v); v=v/1000} else if (v ~ /ms$/) sub("ms","",v); else if (v ~ /s$/) {sub("s","",v); v=v*1000}; p99=v}
    /Transfer\/sec/ {v=$2; m=1; if (v ~ /GB$/) m=1024; else if (v ~ /KB$/) m=1/1024; sub(/[KMG]?B$/,"",v); mb=v*m}
    /Socket errors|Non-2xx/ {err=err $0 " "}
    END {printf "%s %s %.0f %s\n", rps, p99, mb, (err=="" ? "-" : "errors")}' "$1"
}

RESULTS=$W/results.txt
: > $RESULTS
# Targets are interleaved test by test (not one target's three tests, then the next target's),
# so a burst of background load on a shared machine hits every target about equally.
for run in $(seq "$RUNS"); do
  for test in $TESTS; do
    for t in $TARGETS; do
      start $t || continue
      before=$(cpu_ticks)
      case $test in
        ka) wrk -t1 -c50 -d${DUR}s --latency http://127.0.0.1:$PORT/ > $W/$t.ka 2>&1 ;;
        close) wrk -t1 -c50 -d${DUR}s --latency -H 'Connection: close' http://127.0.0.1:$PORT/ > $W/$t.close 2>&1 ;;
        bulk) wrk -t1 -c8 -d${DUR}s --latency http://127.0.0.1:$PORT/big > $W/$t.bulk 2>&1 ;;
        up) wrk -t1 -c8 -d${DUR}s --latency -s "$HERE/upload.lua" http://127.0.0.1:$PORT/ > $W/$t.up 2>&1 ;;
      esac
      after=$(cpu_ticks)
      read rps p99 mb err <<<"$(num $W/$t.$test)"
      # wrk counts the bytes received: an upload's are its requests, 1 MiB each.
      [[ $test == up ]] && mb=$rps
      # CPU per unit of work: microseconds per request (per MB for bulk). It depends far less
      # than throughput on what else the machine is doing.
      cpu=$(awk -v d=$((after - before)) -v hz=$HZ -v r="$rps" -v m="$mb" -v dur=$DUR -v t=$test \
        'BEGIN { s = d / hz; if (t == "bulk" || t == "up") printf "%.0f", (m > 0 ? s * 1e6 / (m * dur) : 0); else printf "%.1f", (r > 0 ? s * 1e6 / (r * dur) : 0) }')
      [[ $t == direct ]] && cpu=-
      echo "$run $t $test $rps $p99 $mb $err $cpu" | tee -a $RESULTS
      stop
    done
  done
  if [[ $MEM == 1 ]]; then
    for t in $TARGETS; do
      [[ $t == direct ]] && continue
      start $t || continue
      read held kb <<<"$(python3 "$HERE/hold.py" $PORT 5000 $(pids_of) 2>/dev/null || echo "0 0")"
      echo "$run $t mem $(awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }') - - -" | tee -a $RESULTS
      stop
    done
  fi
done

echo
printf "medians of %s runs (%ss each test)\n" "$RUNS" "$DUR"
# Bulk depends on it: with bbr the kernel paces each connection (docs/performance.md).
[[ -r /proc/sys/net/ipv4/tcp_congestion_control ]] &&
  echo "system congestion control: $(cat /proc/sys/net/ipv4/tcp_congestion_control)"
printf "%-8s %13s %8s %7s | %13s %8s %7s | %10s %8s | %10s %8s | %8s\n" target keepalive_rps p99_ms cpu_us close_rps p99_ms cpu_us bulk_MBps cpu_usMB upload_MBps cpu_usMB rss_MB
for t in $TARGETS; do
  awk -v t=$t '
    function median(a, n,   i, j, x) { if (n == 0) return "-"; for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j > 0 && a[j] > x; j--) a[j+1] = a[j]; a[j+1] = x }
      return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
    $2 == t && $3 == "ka" { nk++; ka[nk]=$4; kp[nk]=$5; kc[nk]=$8 }
    $2 == t && $3 == "close" { nc++; cl[nc]=$4; cp[nc]=$5; cc[nc]=$8 }
    $2 == t && $3 == "bulk" { nb++; bx[nb]=$6; bc[nb]=$8 }
    $2 == t && $3 == "up" { nu++; ux[nu]=$6; uc[nu]=$8 }
    $2 == t && $3 == "mem" { nm++; mem[nm]=$4 }
    END { printf "%-8s %13.0f %8.2f %7s | %13.0f %8.2f %7s | %10.0f %8s | %10.0f %8s | %8s\n", t, median(ka,nk), median(kp,nk), median(kc,nk), median(cl,nc), median(cp,nc), median(cc,nc), median(bx,nb), median(bc,nb), median(ux,nu), median(uc,nu), median(mem,nm) }' $RESULTS
done
