#!/usr/bin/env bash
# arc benchmark harness: arc vs restic vs borg vs the machine's limits, on generated workloads.
#
#   benches/run.sh [SHAPE...]        SHAPE: spool www system dump big   (default: spool www dump)
#                                    (system: a copy of this machine's /usr/share and /etc, made once by
#                                    benches/system_copy.sh; real files, so its figures are this machine's)
#
# Environment (defaults in brackets):
#   ARC_BENCH_DIR    where workloads, temporary repositories and results live [/var/tmp/arc-bench]
#   ARC_BENCH_TOOLS  tools to time, any of "arc arc-none restic borg" [arc restic borg]
#                    (arc: an encrypted repository, the default of `arc init`;
#                    arc-none: the same binary on `arc init --encryption none`)
#   ARC_BENCH_RUNS   runs per measurement; tables show the median [3]
#   ARC_BENCH_SCALE  workload scale factor, e.g. 0.02 for a quick self-test [1]
#   ARC_BENCH_SEED   workload seed [20241124]
#   ARC_BENCH_BIG_GIB  size of the big shape in GiB (times the scale) [10]
#   ARC_BENCH_LIMITS 0 to skip the machine-limit measurements [1]
#   ARC_BENCH_VERIFY full: also compare restored file contents (diff -r / cmp) [quick: names, sizes, mtimes]
#   ARC_BIN          arc binary [$CARGO_TARGET_DIR or ./target]/release/arc
#   ARC_BENCH_SKIP_BUILD 1: use ARC_BIN as it is, do not run cargo build [0]
#   ARC_EXTRA_ARGS   extra global arguments for every arc command (after --repo DIR) []
#
# Results: $ARC_BENCH_DIR/results/<UTC time>/{raw.csv,meta.json,summary.json,summary.md,logs/}
# and results/latest -> that directory.  See BENCHMARKS.md for what each column means.
set -euo pipefail
echo -20 > /proc/self/autogroup 2>/dev/null || true   # outrank background builds (workloads.md)
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BENCH_DIR=${ARC_BENCH_DIR:-/var/tmp/arc-bench}
read -r -a TOOLS <<< "${ARC_BENCH_TOOLS:-arc restic borg}"
RUNS=${ARC_BENCH_RUNS:-3}
SCALE=${ARC_BENCH_SCALE:-1}
SEED=${ARC_BENCH_SEED:-20241124}
BIG_GIB=${ARC_BENCH_BIG_GIB:-10}
LIMITS=${ARC_BENCH_LIMITS:-1}
VERIFY=${ARC_BENCH_VERIFY:-quick}
ARC_BIN=${ARC_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/arc}
read -r -a ARC_EXTRA <<< "${ARC_EXTRA_ARGS:-}"
GEN=(python3 "$HERE/gen_workloads.py" "$BENCH_DIR" --seed "$SEED" --scale "$SCALE" --big-gib "$BIG_GIB")

SHAPES=("$@")
[[ ${#SHAPES[@]} -gt 0 ]] || SHAPES=(spool www dump)
for s in "${SHAPES[@]}"; do
  case $s in spool|www|system|dump|big) ;; *) echo "unknown shape '$s' (spool www system dump big)" >&2; exit 2 ;; esac
done
GEN_SHAPES=()
for s in "${SHAPES[@]}"; do [[ $s == system ]] || GEN_SHAPES+=("$s"); done
for t in "${TOOLS[@]}"; do
  case $t in arc|arc-none|restic|borg) ;; *) echo "unknown tool '$t' (arc arc-none restic borg)" >&2; exit 2 ;; esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "ARC_BENCH_RUNS must be a positive integer" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "run as root (tmpfs mounts, apt-get)" >&2; exit 2; }
has_tool() { local t; for t in "${TOOLS[@]}"; do [[ $t == "$1" ]] && return 0; done; return 1; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- (a) peer tools and utilities -------------------------------------------------------
pkgs=()
command -v zstd >/dev/null || pkgs+=(zstd)
[[ -x /usr/bin/time ]] || pkgs+=(time)
has_tool restic && ! command -v restic >/dev/null && pkgs+=(restic)
has_tool borg && ! command -v borg >/dev/null && pkgs+=(borgbackup)
if [[ ${#pkgs[@]} -gt 0 ]]; then
  log "apt-get install ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${pkgs[@]}" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "${pkgs[@]}" >/dev/null; }
fi

# ---- (b) arc ----------------------------------------------------------------------------
if has_tool arc || has_tool arc-none; then
  if [[ ${ARC_BENCH_SKIP_BUILD:-0} != 1 ]]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release)
  fi
  [[ -x $ARC_BIN ]] || { echo "arc binary not found at $ARC_BIN" >&2; exit 1; }
fi

# ---- (c) workloads ----------------------------------------------------------------------
mkdir -p "$BENCH_DIR"
if [[ ${#GEN_SHAPES[@]} -gt 0 ]]; then "${GEN[@]}" --shapes "$(IFS=,; echo "${GEN_SHAPES[*]}")"; fi
[[ -f $BENCH_DIR/manifest.json ]] || echo '{"shapes": {}}' > "$BENCH_DIR/manifest.json"
for s in "${SHAPES[@]}"; do
  if [[ $s == system ]]; then "$HERE/system_copy.sh" "$BENCH_DIR/system"; fi
done
"${GEN[@]}" --spool-day2 revert >/dev/null 2>&1 || true   # an interrupted earlier run may have left day 2

# ---- work area, results, cleanup --------------------------------------------------------
RES=$BENCH_DIR/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RES/logs"
WORK=$(mktemp -d "$BENCH_DIR/work.XXXXXX")
MNT=$WORK/mnt
mkdir -p "$MNT"
SPOOL_DAY2=0
cleanup() {
  local rc=$?
  set +e
  while mountpoint -q "$MNT"; do umount "$MNT" 2>/dev/null || umount -l "$MNT"; done
  if [[ $SPOOL_DAY2 == 1 ]]; then "${GEN[@]}" --spool-day2 revert >/dev/null; fi
  rm -rf "$WORK"
  [[ $rc == 0 ]] || log "aborted (exit $rc); partial results in $RES"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

export ARC_PASSWORD=arc-bench RESTIC_PASSWORD=arc-bench RESTIC_CACHE_DIR=$WORK/cache/restic
export BORG_BASE_DIR=$WORK/cache/borg BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export XDG_CACHE_HOME=$WORK/cache/xdg

CSV=$RES/raw.csv
echo "shape,tool,run,step,seconds,max_rss_kb,bytes,files,status" > "$CSV"
record() { # shape tool run step seconds rss_kb bytes files status
  local IFS=,; echo "$*" >> "$CSV"
}

tool_version() {
  case $1 in
    arc|arc-none) "$ARC_BIN" --version 2>/dev/null | head -1 || echo "arc (no --version)" ;;
    restic) restic version | head -1 ;;
    borg) borg --version ;;
  esac
}
{
  echo "{"
  echo "  \"started_utc\": \"$(date -u +%FT%TZ)\", \"host\": \"$(hostname)\","
  echo "  \"cpus\": $(nproc), \"mem_kb\": $(awk '/MemTotal/ {print $2}' /proc/meminfo), \"kernel\": \"$(uname -r)\","
  echo "  \"loadavg_start\": \"$(cut -d' ' -f1-3 /proc/loadavg)\","
  echo "  \"command\": \"ARC_BENCH_TOOLS='${TOOLS[*]}' ARC_BENCH_RUNS=$RUNS ARC_BENCH_SCALE=$SCALE ARC_BENCH_SEED=$SEED ARC_BENCH_BIG_GIB=$BIG_GIB benches/run.sh ${SHAPES[*]}\","
  echo "  \"shapes\": \"${SHAPES[*]}\", \"tools\": \"${TOOLS[*]}\", \"runs\": $RUNS, \"scale\": $SCALE, \"seed\": $SEED,"
  echo "  \"arc_git\": \"$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo +dirty)\","
  echo "  \"versions\": {"
  for t in "${TOOLS[@]}"; do echo "    \"$t\": \"$(tool_version "$t" | tr -d '"')\","; done
  echo "    \"zstd\": \"$(zstd --version | tr -d '"*' | sed 's/^ *//; s/ *$//')\", \"tar\": \"$(tar --version | head -1)\""
  echo "  }"
  echo "}"
} > "$RES/meta.json"
cp "$BENCH_DIR/manifest.json" "$RES/workloads.json"

# ---- measurement primitives -------------------------------------------------------------
# warm PATH...: read everything once so the timed step runs with a warm page cache
warm() {
  local p
  for p in "$@"; do
    [[ -e $p ]] || continue
    if [[ -d $p ]]; then tar -C "$p" -cf - . 2>/dev/null | cat >/dev/null
    else cat "$p" >/dev/null; fi
  done
}

fresh_tmpfs() { # SIZE_BYTES: an empty tmpfs at $MNT
  while mountpoint -q "$MNT"; do umount "$MNT"; done
  mount -t tmpfs -o "size=$1" arc-bench "$MNT"
}

# step SHAPE TOOL RUN NAME STDIN CMD...: sync, run CMD under /usr/bin/time -v (stdin from
# file STDIN through a pipe, or nothing if STDIN is "-"), record wall seconds and peak RSS.
# Sets STEP_SECS, STEP_STATUS, STEP_LOG.  A failing command is recorded, not fatal.
step() {
  local shape=$1 tool=$2 run=$3 name=$4 input=$5; shift 5
  STEP_LOG=$RES/logs/$shape.$tool.$run.$name.log
  local tv=$WORK/time.txt rc=0 t0 t1
  printf '$ %s\n' "$*" > "$STEP_LOG"
  sync
  t0=$EPOCHREALTIME
  if [[ $input == - ]]; then
    /usr/bin/time -v -o "$tv" "$@" </dev/null >>"$STEP_LOG" 2>&1 || rc=$?
  else
    # shellcheck disable=SC2002  # a pipe on purpose: tools must see a stream, not a file
    cat "$input" | /usr/bin/time -v -o "$tv" "$@" >>"$STEP_LOG" 2>&1 || rc=$?
  fi
  t1=$EPOCHREALTIME
  STEP_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  local rss
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$tv" 2>/dev/null || true)
  cat "$tv" >> "$STEP_LOG" 2>/dev/null || true
  STEP_STATUS=ok
  [[ $rc == 0 ]] || STEP_STATUS=fail:$rc
  record "$shape" "$tool" "$run" "$name" "$STEP_SECS" "${rss:-0}" "${STEP_BYTES:-}" "${STEP_FILES:-}" "$STEP_STATUS"
  log "$(printf '%-5s %-6s run %d %-12s %8s s  rss %6s MB  %s' "$shape" "$tool" "$run" "$name" "$STEP_SECS" "$(( ${rss:-0} / 1024 ))" "$STEP_STATUS")"
  STEP_BYTES='' STEP_FILES=''
}

tree_stats() { # DIR -> "FILES BYTES SIG"
  local list
  list=$(cd "$1" && find . -type f -printf '%P\t%s\t%T@\n' | sort)
  printf '%s %s %s\n' "$(printf '%s\n' "$list" | grep -c . || true)" \
    "$(printf '%s\n' "$list" | awk -F'\t' '{ b += $2 } END { printf "%d", b }')" \
    "$(printf '%s\n' "$list" | md5sum | cut -d' ' -f1)"
}

# ---- per-tool commands (fill the CMD array) ----------------------------------------------
cmd_init() { # TOOL REPO
  case $1 in
    arc) CMD=("$ARC_BIN" --repo "$2" "${ARC_EXTRA[@]}" init) ;;
    arc-none) CMD=("$ARC_BIN" --repo "$2" "${ARC_EXTRA[@]}" init --encryption none) ;;
    restic) CMD=(restic -r "$2" init --repository-version 2) ;;
    borg) CMD=(borg init --encryption none "$2") ;;
  esac
}
cmd_backup() { # TOOL REPO ARCHIVE PATH
  case $1 in
    arc|arc-none) CMD=("$ARC_BIN" --repo "$2" "${ARC_EXTRA[@]}" backup "$4" --json) ;;
    restic) CMD=(restic -r "$2" --compression auto backup --host arc-bench "$4") ;;
    borg) CMD=(borg create --compression "zstd,3" "$2::$3" "$4") ;;
  esac
}
cmd_backup_stdin() { # TOOL REPO ARCHIVE NAME
  case $1 in
    arc|arc-none) CMD=("$ARC_BIN" --repo "$2" "${ARC_EXTRA[@]}" backup --stdin --stdin-name "$4") ;;
    restic) CMD=(restic -r "$2" --compression auto backup --host arc-bench --stdin --stdin-filename "$4") ;;
    borg) CMD=(borg create --compression "zstd,3" --stdin-name "$4" "$2::$3" -) ;;
  esac
}
cmd_restore() { # TOOL REPO ARCHIVE TARGET (the latest snapshot; borg needs its name)
  case $1 in
    arc|arc-none) CMD=("$ARC_BIN" --repo "$2" "${ARC_EXTRA[@]}" restore latest --target "$4") ;;
    restic) CMD=(restic -r "$2" restore latest --target "$4") ;;
    borg) CMD=(env -C "$4" borg extract "$2::$3") ;;
  esac
}

# Repository bytes. arc's index.redb is a rebuildable lookup cache (restic
# and borg keep theirs outside the repository, in ~/.cache), so it is not
# counted here; its size is logged separately.
stored() {
  local total cache=0
  total=$(du -sb "$1" | cut -f1)
  if [ -f "$1/index.redb" ]; then
    cache=$(stat -c %s "$1/index.redb")
    log "  (arc index cache $1/index.redb: $cache bytes, not counted)"
  fi
  echo $((total - cache))
}

# ---- machine limits ---------------------------------------------------------------------
# limits SHAPE RUN PATH BYTES FILES: read, stat, compress (+ its output size), write (tar -xf
# into a tmpfs; not for big, whose tar would not fit in memory next to its page cache)
limits() {
  local shape=$1 run=$2 path=$3 bytes=$4 files=$5
  local parent base
  parent=$(dirname "$path") base=$(basename "$path")
  warm "$path"
  STEP_BYTES=$bytes STEP_FILES=$files
  # shellcheck disable=SC2016  # $1/$2 are expanded by the inner bash
  step "$shape" limit "$run" read - bash -c 'tar -C "$1" -cf - "$2" | cat >/dev/null' _ "$parent" "$base"
  find "$path" >/dev/null
  STEP_BYTES=$bytes STEP_FILES=$files
  step "$shape" limit "$run" stat - find "$path" -printf '%s %T@ %C@ %i\n'
  STEP_BYTES=$bytes STEP_FILES=$files
  # shellcheck disable=SC2016
  step "$shape" limit "$run" compress - bash -c 'tar -C "$1" -cf - "$2" | zstd -3 -T2 | wc -c' _ "$parent" "$base"
  record "$shape" limit "$run" compressed_size 0 0 "$(grep -E '^[0-9]+$' "$STEP_LOG" | tail -n 1)" "" ok
  if [[ $shape != big ]]; then
    [[ -f $WORK/limit-$shape.tar ]] || tar -C "$parent" -cf "$WORK/limit-$shape.tar" "$base"
    fresh_tmpfs $(( bytes * 2 + (1 << 30) ))
    warm "$WORK/limit-$shape.tar"
    STEP_BYTES=$bytes STEP_FILES=$files
    step "$shape" limit "$run" write - tar -C "$MNT" -xf "$WORK/limit-$shape.tar"
    umount "$MNT"
  fi
}

# ---- shapes -----------------------------------------------------------------------------
verify_tree() { # SHAPE TOOL RUN SRC EXPECTED_STATS: check the restored copy under $MNT
  local got dst=$MNT$4 status=ok
  if [[ -d $dst ]]; then
    got=$(tree_stats "$dst")
    [[ $got == "$5" ]] || status="mismatch:got_${got// /_}_want_${5// /_}"
    if [[ $status == ok && $VERIFY == full ]] && ! diff -rq "$4" "$dst" > "$RES/logs/$1.$2.$3.diff" 2>&1; then
      status=content_mismatch
    fi
  else
    status=missing:$dst
  fi
  record "$1" "$2" "$3" verify 0 0 "" "" "$status"
  [[ $status == ok ]] || log "VERIFY $1 $2 run $3: $status"
}

bench_tree() { # SHAPE: spool, www or system
  local shape=$1 src=$BENCH_DIR/$1 run tool repo s1 s2 st_day1 st_day2=
  st_day1=$(tree_stats "$src")
  local files bytes
  read -r files bytes _ <<< "$st_day1"
  log "$shape: $files files, $bytes bytes"
  for run in $(seq 1 "$RUNS"); do
    if [[ $LIMITS == 1 ]]; then limits "$shape" "$run" "$src" "$bytes" "$files"; fi
    for tool in "${TOOLS[@]}"; do
      repo=$WORK/repo-$tool
      rm -rf "$repo" "$WORK/cache"
      cmd_init "$tool" "$repo"; "${CMD[@]}" > "$RES/logs/$shape.$tool.$run.init.log" 2>&1
      warm "$src"
      cmd_backup "$tool" "$repo" day1 "$src"
      STEP_BYTES=$bytes STEP_FILES=$files; step "$shape" "$tool" "$run" backup - "${CMD[@]}"
      s1=$(stored "$repo"); record "$shape" "$tool" "$run" stored 0 0 "$s1" "" ok
      warm "$src" "$repo" "$WORK/cache"
      cmd_backup "$tool" "$repo" nochange "$src"
      STEP_BYTES=$bytes STEP_FILES=$files; step "$shape" "$tool" "$run" nochange - "${CMD[@]}"
      local expect=$st_day1 last=nochange
      if [[ $shape == spool ]]; then
        SPOOL_DAY2=1
        "${GEN[@]}" --spool-day2 apply >/dev/null
        [[ -n $st_day2 ]] || st_day2=$(tree_stats "$src")
        expect=$st_day2 last=day2
        warm "$src" "$repo" "$WORK/cache"
        cmd_backup "$tool" "$repo" day2 "$src"
        read -r STEP_FILES STEP_BYTES _ <<< "$st_day2"; step "$shape" "$tool" "$run" day2 - "${CMD[@]}"
        s2=$(stored "$repo"); record "$shape" "$tool" "$run" stored_day2 0 0 "$s2" "" ok
        record "$shape" "$tool" "$run" day2_added 0 0 "$(( s2 - s1 ))" "" ok
      fi
      fresh_tmpfs $(( bytes * 2 + (1 << 30) ))
      warm "$repo" "$WORK/cache"
      cmd_restore "$tool" "$repo" "$last" "$MNT"
      read -r STEP_FILES STEP_BYTES _ <<< "$expect"; step "$shape" "$tool" "$run" restore - "${CMD[@]}"
      verify_tree "$shape" "$tool" "$run" "$src" "$expect"
      umount "$MNT"
      if [[ $shape == spool ]]; then "${GEN[@]}" --spool-day2 revert >/dev/null; SPOOL_DAY2=0; fi
      rm -rf "$repo" "$WORK/cache"
    done
  done
  rm -f "$WORK/limit-$shape.tar"
}

bench_dump() {
  local d1=$BENCH_DIR/dump/day1.sql d2=$BENCH_DIR/dump/day2.sql run tool repo s1 s2 b1 b2 f
  b1=$(stat -c %s "$d1") b2=$(stat -c %s "$d2")
  for run in $(seq 1 "$RUNS"); do
    if [[ $LIMITS == 1 ]]; then limits dump "$run" "$d1" "$b1" 1; fi
    for tool in "${TOOLS[@]}"; do
      repo=$WORK/repo-$tool
      rm -rf "$repo" "$WORK/cache"
      cmd_init "$tool" "$repo"; "${CMD[@]}" > "$RES/logs/dump.$tool.$run.init.log" 2>&1
      warm "$d1"
      cmd_backup_stdin "$tool" "$repo" day1 shop.sql
      STEP_BYTES=$b1 STEP_FILES=1; step dump "$tool" "$run" stdin_day1 "$d1" "${CMD[@]}"
      s1=$(stored "$repo"); record dump "$tool" "$run" stored 0 0 "$s1" "" ok
      warm "$d2" "$repo" "$WORK/cache"
      cmd_backup_stdin "$tool" "$repo" day2 shop.sql
      STEP_BYTES=$b2 STEP_FILES=1; step dump "$tool" "$run" stdin_day2 "$d2" "${CMD[@]}"
      s2=$(stored "$repo"); record dump "$tool" "$run" stored_day2 0 0 "$s2" "" ok
      record dump "$tool" "$run" day2_added 0 0 "$(( s2 - s1 ))" "" ok
      fresh_tmpfs $(( b2 * 2 + (1 << 30) ))
      warm "$repo" "$WORK/cache"
      cmd_restore "$tool" "$repo" day2 "$MNT"
      STEP_BYTES=$b2 STEP_FILES=1; step dump "$tool" "$run" restore - "${CMD[@]}"
      f=$(find "$MNT" -type f -name shop.sql | head -n 1)
      if [[ -z $f ]]; then record dump "$tool" "$run" verify 0 0 "" "" missing:shop.sql
      elif cmp -s "$f" "$d2"; then record dump "$tool" "$run" verify 0 0 "" "" ok
      else record dump "$tool" "$run" verify 0 0 "" "" content_mismatch; log "VERIFY dump $tool run $run: content mismatch"; fi
      umount "$MNT"
      rm -rf "$repo" "$WORK/cache"
      if [[ $tool == arc ]]; then
        # The same two days through --stdin-from-command: arc runs the dumper
        # (`cat`, so only arc's side is timed) and reads its output.
        cmd_init arc "$repo"; "${CMD[@]}" > "$RES/logs/dump.arc.$run.cmd-init.log" 2>&1
        warm "$d1"
        STEP_BYTES=$b1 STEP_FILES=1; step dump arc "$run" cmd_day1 - \
          "$ARC_BIN" --repo "$repo" "${ARC_EXTRA[@]}" backup --stdin-from-command "cat $d1" --stdin-name shop.sql
        s1=$(stored "$repo")
        warm "$d2" "$repo"
        STEP_BYTES=$b2 STEP_FILES=1; step dump arc "$run" cmd_day2 - \
          "$ARC_BIN" --repo "$repo" "${ARC_EXTRA[@]}" backup --stdin-from-command "cat $d2" --stdin-name shop.sql
        s2=$(stored "$repo"); record dump arc "$run" cmd_day2_added 0 0 "$(( s2 - s1 ))" "" ok
        rm -rf "$repo"
      fi
    done
  done
}

bench_big() {
  local big=$BENCH_DIR/big/big.bin run tool repo b
  b=$(stat -c %s "$big")
  for run in $(seq 1 "$RUNS"); do
    if [[ $LIMITS == 1 ]]; then limits big "$run" "$big" "$b" 1; fi
    for tool in "${TOOLS[@]}"; do
      for mode in file stdin; do
        repo=$WORK/repo-$tool
        rm -rf "$repo" "$WORK/cache"
        cmd_init "$tool" "$repo"; "${CMD[@]}" > "$RES/logs/big.$tool.$run.init-$mode.log" 2>&1
        warm "$big"
        STEP_BYTES=$b STEP_FILES=1
        if [[ $mode == file ]]; then
          cmd_backup "$tool" "$repo" big "$big"; step big "$tool" "$run" backup - "${CMD[@]}"
        else
          cmd_backup_stdin "$tool" "$repo" big big.bin; step big "$tool" "$run" stdin "$big" "${CMD[@]}"
        fi
        record big "$tool" "$run" "stored_$mode" 0 0 "$(stored "$repo")" "" ok
        rm -rf "$repo" "$WORK/cache"
      done
    done
  done
}

t_start=$EPOCHREALTIME
for shape in "${SHAPES[@]}"; do
  log "=== $shape"
  case $shape in
    spool|www|system) bench_tree "$shape" ;;
    dump) bench_dump ;;
    big) bench_big ;;
  esac
done
python3 - "$RES/meta.json" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m.update(loadavg_end=sys.argv[2], total_seconds=int(sys.argv[3]))
json.dump(m, open(sys.argv[1], "w"), indent=2)
PY
ln -sfn "$(basename "$RES")" "$BENCH_DIR/results/latest"
python3 "$HERE/report.py" "$RES" | tee "$RES/summary.md"
log "results in $RES"
