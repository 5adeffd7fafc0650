#!/usr/bin/env bash
# Benchmark-style fuzzing run (not part of CI): runs each target in turn,
# one process, for a bounded time or number of executions, and prints the
# executions and wall time from libFuzzer's final stats.
#
#   fuzz/run.sh                          # every target, 60 s each
#   TIME=600 fuzz/run.sh tree pack       # chosen targets, 10 min each
#   RUNS=10000000 TIME=3600 fuzz/run.sh  # stop at 10M executions (or 1 h)
#
# New inputs go to fuzz/corpus-new/<target> (git-ignored); crashes to
# fuzz/artifacts/<target>. Fold new inputs into the committed corpus with
#   cargo +nightly fuzz cmin -s none <target> ... (see fuzz/README.md).
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
TIME=${TIME:-60}
RUNS=${RUNS:--1}
NICE=${NICE:-10}
all=(envelope config snapshot lock index_file tree pack_trailer pack frame)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

# Inputs much longer than the real files (a few hundred bytes) have little
# new to say and cost time; structures of many records get 8 KiB (which also
# keeps a frame's zstd output bound, 43690 x stored, below the 512 MiB
# allocation limit of fuzz/src/lib.rs).
max_len() {
    case $1 in
        pack | frame | tree | index_file | pack_trailer) echo 8192 ;;
        *) echo 2048 ;;
    esac
}

nice -n "$NICE" cargo +nightly fuzz build -s none -a || exit 1
mkdir -p logs
printf '%-13s %14s %10s %s\n' target executions seconds result
for t in "${targets[@]}"; do
    mkdir -p "corpus-new/$t" "corpus/$t" "artifacts/$t"
    log="logs/$t-$(date -u +%Y%m%dT%H%M%SZ).log"
    start=$(date +%s)
    nice -n "$NICE" cargo +nightly fuzz run -s none -a "$t" "corpus-new/$t" "corpus/$t" -- \
        -max_total_time="$TIME" -runs="$RUNS" -max_len="$(max_len "$t")" -dict=dict/arc.dict \
        -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    secs=$(($(date +%s) - start))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    result=ok
    [ $rc -ne 0 ] && result="CRASH (exit $rc), see $log and artifacts/$t"
    printf '%-13s %14s %10s %s\n' "$t" "${execs:-?}" "$secs" "$result"
done
