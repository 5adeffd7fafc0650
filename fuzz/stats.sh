#!/usr/bin/env bash
# Totals per target over every libFuzzer log in fuzz/logs (written by
# run.sh): executions (stat::number_of_executed_units), libFuzzer's own
# seconds ("Done N runs in S second(s)"; a run that crashed has no such
# line and counts 0 s), runs, crashing runs (panic, abort, over-allocation)
# and runs stopped by libFuzzer's -timeout.
cd "$(dirname "$0")/logs" || exit 1
printf '%-13s %5s %14s %8s %8s %8s\n' target runs executions seconds crashed timeouts
for t in envelope config snapshot lock index_file tree pack_trailer pack frame; do
    runs=0 execs=0 secs=0 crashed=0 timeouts=0
    for f in "$t"-*.log; do
        [ -e "$f" ] || continue
        n=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$f" | grep -o '[0-9]*$' | tail -1)
        [ -n "$n" ] || continue
        runs=$((runs + 1)) execs=$((execs + n))
        s=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$f" | awk '{print $5}' | tail -1)
        secs=$((secs + ${s:-0}))
        if grep -q 'libFuzzer: timeout' "$f"; then
            timeouts=$((timeouts + 1))
        elif grep -q 'deadly signal\|panicked\|ERROR: libFuzzer' "$f"; then
            crashed=$((crashed + 1))
        fi
    done
    printf '%-13s %5d %14d %8d %8d %8d\n' "$t" "$runs" "$execs" "$secs" "$crashed" "$timeouts"
done
