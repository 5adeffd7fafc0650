#!/usr/bin/env bash
# A/B of two arc binaries (or one binary with two sets of backup options) by the CPU of the
# spool's no-change backup, for a machine shared with other work (BENCHMARKS.md "`backup -v`
# costs nothing unless asked for").
#
#   benches/nochange_ab.sh ROUNDS BIN_A BIN_B [BACKUP_OPTIONS_FOR_B...]
#
# One repository (--encryption none) holding a first backup of the spool (made by BIN_A); then
# ROUNDS rounds of one no-change backup each, A with -q (as from cron: no bar, no scan), B with
# the options given (default -q), the order reversed every other round. Prints per run:
# "bin [options] wall user sys cpu peakKiB load L lines N" (N: lines B wrote to stdout).
# Workload: benches/run.sh's spool (in $ARC_BENCH_DIR [/var/tmp/arc-bench]). Needs GNU time, bc.
set -euo pipefail
N=$1 A=$(realpath "$2") B=$(realpath "$3"); shift 3
BX=("$@"); [[ ${#BX[@]} -gt 0 ]] || BX=(-q)
SRC=${ARC_BENCH_DIR:-/var/tmp/arc-bench}/spool
[[ -d $SRC ]] || { echo "workload missing: run benches/run.sh spool once (or gen_workloads.py)" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/arc-nochange-ab.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
R=$WORK/repo
export LC_ALL=C XDG_CACHE_HOME=$WORK/cache
"$A" --repo "$R" init --encryption none >/dev/null 2>&1
"$A" --repo "$R" backup -q "$SRC" >/dev/null 2>&1
one() { # BIN OPTIONS...
  local b=$1; shift
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/time" "$b" --repo "$R" backup "$SRC" "$@" >"$WORK/out" 2>"$WORK/err" ||
    { echo "FAIL $b"; tail -3 "$WORK/err"; }
  read -r e u s m < "$WORK/time"
  echo "$(basename "$b") [$*] $e $u $s $(echo "$u + $s" | bc) $m load $(cut -d' ' -f1 /proc/loadavg) lines $(wc -l < "$WORK/out")"
}
for r in $(seq 1 "$N"); do
  if (( r % 2 == 1 )); then one "$A" -q; one "$B" "${BX[@]}"; else one "$B" "${BX[@]}"; one "$A" -q; fi
done
