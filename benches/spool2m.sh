#!/usr/bin/env bash
# A 2,000,000-message mail spool (issue 16): first backup (peak RSS, files/s against the
# 200,000-message spool in the same run) and no-change backup against a `find` stat walk.
#
#   benches/spool2m.sh
#
# Generates (once, deterministic) the spool shape of gen_workloads.py at scale 1 (200k
# messages, ~1.2 GB) and at scale ARC_SPOOL2M_SCALE (10: 2M messages, ~12 GB; check
# `df -h` and `df -i` first), each in its own directory, then for each, smaller first, on a
# fresh encrypted repository (the default of `arc init`), page cache dropped before every step:
#   first         first backup: wall, user+sys, peak RSS (GNU time), files/s
#   nochange-cold a backup with nothing changed, page cache dropped
#   nochange-warm the same again, page cache warm
#   find-cold     `find TREE -printf '%s %T@ %C@ %i\n' > /dev/null`, page cache dropped
#   find-warm     the same again, warm
#
# Environment (defaults in brackets):
#   ARC_BENCH_DIR        workloads and results [/var/tmp/arc-bench]
#   ARC_SPOOL2M_SCALE    scale of the large spool [10]
#   ARC_BIN              arc binary [target/release/arc]
#   ARC_SPOOL2M_DIR      where the two spools are generated (s200k/, s2m/) [$ARC_BENCH_DIR/spool-scale]
#   ARC_SPOOL2M_NO_GEN   1: use the trees found in ARC_SPOOL2M_DIR as they are (no generation)
#   ARC_SPOOL2M_KEEP     1: keep the generated large spool [0: delete it at the end, it is big]
#
# Results: $ARC_BENCH_DIR/results/spool2m-<UTC time>/{raw.csv,meta.txt,logs/}
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BENCH_DIR=${ARC_BENCH_DIR:-/var/tmp/arc-bench}
SCALE=${ARC_SPOOL2M_SCALE:-10}
ARC_BIN=${ARC_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/arc}
KEEP=${ARC_SPOOL2M_KEEP:-0}

[[ $(id -u) == 0 ]] || { echo "run as root (drop_caches)" >&2; exit 2; }
[[ -x /usr/bin/time ]] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

TREES=${ARC_SPOOL2M_DIR:-$BENCH_DIR/spool-scale}
SMALL=$TREES/s200k LARGE=$TREES/s2m
mkdir -p "$SMALL" "$LARGE"
if [[ ${ARC_SPOOL2M_NO_GEN:-0} != 1 ]]; then
  log "generating the spools (skipped when present)"
  python3 "$HERE/gen_workloads.py" "$SMALL" --shapes spool --scale 1 >&2
  python3 "$HERE/gen_workloads.py" "$LARGE" --shapes spool --scale "$SCALE" >&2
fi

RES=$BENCH_DIR/results/spool2m-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RES/logs"
WORK=$(mktemp -d "$BENCH_DIR/spool2m-work.XXXXXX")
export ARC_PASSWORD=arc-bench
cleanup() {
  local rc=$?
  rm -rf "$WORK"
  [[ $KEEP == 1 ]] || rm -rf "$LARGE"
  [[ $rc == 0 ]] || log "aborted (exit $rc); partial results in $RES"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

CSV=$RES/raw.csv
echo "tree,step,seconds,user_sys,rss_kb,files,files_per_s,status" > "$CSV"
{
  echo "started_utc: $(date -u +%FT%TZ)  host: $(hostname)  cpus: $(nproc)  kernel: $(uname -r)"
  echo "loadavg_start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "arc: $("$ARC_BIN" --version) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo +dirty))"
  echo "command: ARC_SPOOL2M_SCALE=$SCALE benches/spool2m.sh"
  echo "load: other sessions share this machine; see loadavg"
} > "$RES/meta.txt"

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# step TREE STEP FILES CMD...: wall, user+sys, peak RSS of CMD
step() {
  local tree=$1 name=$2 files=$3 rc=0; shift 3
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.txt" "$@" > "$RES/logs/$tree.$name.log" 2>&1 || rc=$?
  read -r wall user sys rss < "$WORK/time.txt"
  local cpu fps
  cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
  fps=$(awk -v f="$files" -v w="$wall" 'BEGIN { printf "%.0f", (w > 0 ? f / w : 0) }')
  echo "$tree,$name,$wall,$cpu,$rss,$files,$fps,$([[ $rc == 0 ]] && echo ok || echo "fail:$rc")" >> "$CSV"
  log "$(printf '%-5s %-14s %8ss wall %8ss cpu %8s KiB peak %9s files/s' "$tree" "$name" "$wall" "$cpu" "$rss" "$fps")"
  return $rc
}

for tree in s200k s2m; do
  src=$TREES/$tree/spool
  files=$(find "$src" -type f | wc -l)
  repo=$WORK/repo-$tree
  export XDG_CACHE_HOME=$WORK/cache-$tree
  "$ARC_BIN" --repo "$repo" init > "$RES/logs/$tree.init.log" 2>&1
  drop_caches
  step "$tree" first "$files" "$ARC_BIN" --repo "$repo" backup "$src"
  drop_caches
  step "$tree" nochange-cold "$files" "$ARC_BIN" --repo "$repo" backup "$src"
  step "$tree" nochange-warm "$files" "$ARC_BIN" --repo "$repo" backup "$src"
  drop_caches
  step "$tree" find-cold "$files" sh -c "find '$src' -printf '%s %T@ %C@ %i\n' > /dev/null"
  step "$tree" find-warm "$files" sh -c "find '$src' -printf '%s %T@ %C@ %i\n' > /dev/null"
  echo "$tree: $files files, $(du -sb "$src" | cut -f1) bytes; repository $(du -sb "$repo" | cut -f1) bytes" >> "$RES/meta.txt"
  rm -rf "$repo" "$XDG_CACHE_HOME"
done
echo "loadavg_end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$RES/meta.txt"
log "results: $RES"
column -s, -t < "$CSV" >&2
