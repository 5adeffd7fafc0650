#!/usr/bin/env bash
# A/B of two arc binaries by CPU work, for a machine shared with other work,
# where wall time says little (BENCHMARKS.md "Backup and restore CPU work").
#
#   benches/cpu_ab.sh OLD_ARC NEW_ARC [ROUNDS]
#
# 1. Instructions (valgrind --tool=callgrind, "Collected"): a `--stdin` backup of the first
#    40 MB of the dump shape's day1.sql into a new encrypted repository, then its
#    restore; deterministic enough to compare single runs, and blind to the load.
# 2. user+sys CPU seconds and peak RSS (/usr/bin/time) of the backup of the www tree and
#    of the whole day-1 dump (--stdin), and of their restores into a tmpfs, old and
#    new alternating ROUNDS times [2], page cache warm.
# Workloads: benches/run.sh's (generated in $ARC_BENCH_DIR [/var/tmp/arc-bench]).
# Needs root (tmpfs), valgrind, GNU time. Prints one line per measurement.
set -euo pipefail
OLD=$(realpath "$1") NEW=$(realpath "$2") ROUNDS=${3:-2}
BENCH_DIR=${ARC_BENCH_DIR:-/var/tmp/arc-bench}
DUMP=$BENCH_DIR/dump/day1.sql WWW=$BENCH_DIR/www
[[ -f $DUMP && -d $WWW ]] || { echo "workloads missing: run benches/run.sh once (or gen_workloads.py)" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/arc-cpu-ab.XXXXXX")
MNT=$WORK/mnt
mkdir -p "$MNT"
cleanup() { while mountpoint -q "$MNT"; do umount "$MNT"; done; rm -rf "$WORK"; }
trap cleanup EXIT
export ARC_PASSWORD=arc-bench XDG_CACHE_HOME=$WORK/cache LC_ALL=C

head -c 40000000 "$DUMP" > "$WORK/dump40.sql"
instructions() { # LABEL BIN
  local repo=$WORK/cg-$1 ir
  rm -rf "$repo" "$WORK/cg-out"
  "$2" --repo "$repo" init >/dev/null 2>&1
  ir=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$2" --repo "$repo" backup --stdin \
    --stdin-name shop.sql < "$WORK/dump40.sql" 2>&1 >/dev/null | grep -o 'Collected : [0-9]*' | grep -o '[0-9]*$')
  echo "$1 instructions dump40-backup $ir"
  ir=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$2" --repo "$repo" restore latest \
    --target "$WORK/cg-out" 2>&1 >/dev/null | grep -o 'Collected : [0-9]*' | grep -o '[0-9]*$')
  echo "$1 instructions dump40-restore $ir"
  cmp -s "$WORK/cg-out/shop.sql" "$WORK/dump40.sql" || echo "$1 dump40 restore MISMATCH"
}
instructions old "$OLD"
instructions new "$NEW"

timed() { # LABEL SHAPE STEP BIN
  local repo=$WORK/repo-$1 tv=$WORK/time.txt
  case $3 in
    backup)
      rm -rf "$repo"; "$4" --repo "$repo" init >/dev/null 2>&1
      if [[ $2 == dump ]]; then
        cat "$DUMP" >/dev/null; sync
        /usr/bin/time -f '%e %U %S %M' -o "$tv" "$4" --repo "$repo" backup --stdin --stdin-name shop.sql \
          < "$DUMP" >/dev/null 2>&1
      else
        tar -C "$(dirname "$WWW")" -cf - "$(basename "$WWW")" | cat >/dev/null; sync
        /usr/bin/time -f '%e %U %S %M' -o "$tv" "$4" --repo "$repo" backup "$WWW" >/dev/null 2>&1
      fi ;;
    restore)
      mount -t tmpfs -o size=3g arc-cpu-ab "$MNT"
      tar -C "$WORK" -cf - "repo-$1" | cat >/dev/null
      /usr/bin/time -f '%e %U %S %M' -o "$tv" "$4" --repo "$repo" restore latest --target "$MNT/r" >/dev/null 2>&1
      umount "$MNT" ;;
  esac
  read -r wall user sys rss < "$tv"
  echo "$1 $2 $3 wall $wall user $user sys $sys cpu $(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }') rss_kb $rss load $(cut -d' ' -f1 /proc/loadavg)"
}
for round in $(seq 1 "$ROUNDS"); do
  for shape in dump www; do
    for step in backup restore; do
      timed old "$shape" "$step" "$OLD"
      timed new "$shape" "$step" "$NEW"
    done
  done
done
