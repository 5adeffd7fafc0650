#!/usr/bin/env bash
# A directory of 1,000,000 files (issue 16): what adding one file costs the repository, and
# what `ls` and `stat` of it cost through `arc mount`.
#
#   benches/bigdir.sh
#
# Generates (once, deterministic) $ARC_BENCH_DIR/bigdir/src/d/ with N tiny files (names
# `m<7 digits>.<8 hex>.eml`, 20-40 bytes of distinct content, mtimes fixed), then on a fresh
# encrypted repository (the default of `arc init`):
#   backup-1      first backup of src/: wall, user+sys, peak RSS (GNU time)
#   backup-2      one file added to d/, backed up again: the same figures, and the bytes the
#                 repository directory grew by (every byte of every file under it, by top-level
#                 subdirectory), and the local cache ($XDG_CACHE_HOME/arc) separately
#   mount         for each step a fresh `arc mount --count-requests` (empty kernel and arc
#                 caches) with the page cache dropped (cold), then the same step again on the
#                 same mount (warm):
#                   ls -f       `ls -f d | wc -l` (getdents only, unsorted)
#                   ls          `ls d > /dev/null` (sorted, no stat)
#                   ls -l       `ls -l d > /dev/null` (a LOOKUP per name)
#                   stat        one name: the first stat (cold), then ARC_BENCH_STAT_REPEAT stats
#                               in one process, median (warm)
#                   missing     a name that does not exist, the same way
#                 peak RSS of the mount, and its kernel request counts per step.
# Each mount step also records the CPU time (user+sys) the mount process spent on it, which
# is what to compare on a loaded machine (the wall time then includes waiting for a CPU).
# Every mount step is bounded by ARC_BENCH_STEP_TIMEOUT seconds (a timeout is recorded, not
# fatal), so a slow binary can be measured too.
#
# Environment (defaults in brackets):
#   ARC_BENCH_DIR            workloads and results [/var/tmp/arc-bench]
#   ARC_BIGDIR_FILES         files in the directory [1000000]
#   ARC_BIN                  arc binary [target/release/arc]
#   ARC_BENCH_STAT_REPEAT    warm stats per figure [101]
#   ARC_BENCH_STEP_TIMEOUT   seconds per mount step [600]
#   ARC_BIGDIR_KEEP          1: keep the repository and the generated tree [0: keep the tree only]
#   ARC_BIGDIR_STEPS         mount steps to run [stat ls-f ls ls-l]
#   ARC_BIGDIR_REPO          an existing repository of this tree (from a run with
#                            ARC_BIGDIR_KEEP=1): skip the backups, measure the mount only (to
#                            compare two binaries on one repository) []
#
# Results: $ARC_BENCH_DIR/results/bigdir-<UTC time>/{raw.csv,meta.txt,logs/}
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BENCH_DIR=${ARC_BENCH_DIR:-/var/tmp/arc-bench}
N=${ARC_BIGDIR_FILES:-1000000}
ARC_BIN=${ARC_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/arc}
REPEAT=${ARC_BENCH_STAT_REPEAT:-101}
STEP_TIMEOUT=${ARC_BENCH_STEP_TIMEOUT:-600}
KEEP=${ARC_BIGDIR_KEEP:-0}

[[ $(id -u) == 0 ]] || { echo "run as root (FUSE, drop_caches)" >&2; exit 2; }
[[ -e /dev/fuse ]] || { echo "/dev/fuse is missing" >&2; exit 2; }
[[ -x /usr/bin/time ]] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- the tree ------------------------------------------------------------------------------
SRC=$BENCH_DIR/bigdir/src
DIR=$SRC/d
STAMP=$BENCH_DIR/bigdir/generated-$N-v1
if [[ ! -f $STAMP && -z ${ARC_BIGDIR_REPO:-} ]]; then
  need_inodes=$((N + 1000))
  mkdir -p "$BENCH_DIR"
  free_inodes=$(df --output=iavail "$BENCH_DIR" | tail -1)
  (( free_inodes > need_inodes )) || { echo "$BENCH_DIR: $free_inodes free inodes, need $need_inodes" >&2; exit 2; }
  log "generating $N files in $DIR"
  rm -rf "$BENCH_DIR/bigdir/src"
  mkdir -p "$DIR"
  python3 - "$DIR" "$N" <<'PY'
import hashlib, os, sys
d, n = sys.argv[1], int(sys.argv[2])
t0 = 1704074400
for i in range(n):
    h = hashlib.blake2b(i.to_bytes(8, "little"), digest_size=8).hexdigest()
    p = os.path.join(d, "m%07d.%s.eml" % (i, h[:8]))
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, ("message %d %s\n" % (i, h[: 4 + i % 13])).encode())
    os.close(fd)
    os.utime(p, (t0 - i, t0 - i))
PY
  touch "$STAMP"
fi
NEWFILE=$DIR/m9999999.added.eml
rm -f "$NEWFILE"
PROBE=$(printf 'm%07d.%s.eml' $((N / 2)) "$(python3 -c "import hashlib,sys;print(hashlib.blake2b(($((N / 2))).to_bytes(8,'little'),digest_size=8).hexdigest()[:8])")")
[[ -n ${ARC_BIGDIR_REPO:-} || -f $DIR/$PROBE ]] || { echo "probe $DIR/$PROBE missing: regenerate (rm $STAMP)" >&2; exit 2; }

# ---- work area -----------------------------------------------------------------------------
RES=$BENCH_DIR/results/bigdir-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RES/logs"
WORK=$(mktemp -d "$BENCH_DIR/bigdir-work.XXXXXX")
REPO=${ARC_BIGDIR_REPO:-$WORK/repo} MNT=$WORK/mnt
mkdir -p "$MNT"
export ARC_PASSWORD=arc-bench XDG_CACHE_HOME=$WORK/cache
MOUNT_PID=''
cleanup() {
  local rc=$?
  set +e
  [[ -n $MOUNT_PID ]] && stop_mount
  while mountpoint -q "$MNT"; do fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT"; done
  rm -f "$NEWFILE"
  [[ $KEEP == 1 ]] || rm -rf "$WORK"
  [[ $rc == 0 ]] || log "aborted (exit $rc); partial results in $RES"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

CSV=$RES/raw.csv
# user_sys: of arc for backups, of the mount process for mount steps
echo "step,seconds,user_sys,rss_kb,bytes,requests,status" > "$CSV"
{
  echo "started_utc: $(date -u +%FT%TZ)  host: $(hostname)  cpus: $(nproc)  kernel: $(uname -r)"
  echo "loadavg_start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "arc: $("$ARC_BIN" --version) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo +dirty))"
  echo "files: $N in one directory; probe name: $PROBE"
  echo "command: ARC_BIGDIR_FILES=$N ARC_BENCH_STAT_REPEAT=$REPEAT benches/bigdir.sh"
} > "$RES/meta.txt"

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
tree_bytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d", s }'; }
by_part() { # DIR: bytes per top-level entry
  local p
  for p in "$1"/*; do printf '%s=%s ' "$(basename "$p")" "$(tree_bytes "$p")"; done
}

# gnu_time STEP CMD...: wall, user+sys and peak RSS of CMD
gnu_time() {
  local step=$1 rc=0; shift
  /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.txt" "$@" > "$RES/logs/$step.log" 2>&1 || rc=$?
  read -r wall user sys rss < "$WORK/time.txt"
  STEP_WALL=$wall
  echo "$step,$wall,$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }'),$rss,,,$([[ $rc == 0 ]] && echo ok || echo "fail:$rc")" >> "$CSV"
  log "$(printf '%-12s %8ss wall  %5s+%-5s cpu  %7s KiB peak' "$step" "$wall" "$user" "$sys" "$rss")"
  return $rc
}

# ---- backups -------------------------------------------------------------------------------
if [[ -z ${ARC_BIGDIR_REPO:-} ]]; then
"$ARC_BIN" --repo "$REPO" init > "$RES/logs/init.log" 2>&1
log "first backup of $N files"
gnu_time backup-1 "$ARC_BIN" --repo "$REPO" backup "$SRC"
before=$(tree_bytes "$REPO") cache_before=$(tree_bytes "$WORK/cache")
parts_before=$(by_part "$REPO")
echo "one new file" > "$NEWFILE"
touch -d @1704074401 "$NEWFILE"
gnu_time backup-2 "$ARC_BIN" --repo "$REPO" backup "$SRC"
after=$(tree_bytes "$REPO") cache_after=$(tree_bytes "$WORK/cache")
parts_after=$(by_part "$REPO")
echo "repo_growth,,,,$((after - before)),,ok" >> "$CSV"
echo "cache_growth,,,,$((cache_after - cache_before)),,ok" >> "$CSV"
{
  echo "repository bytes after backup 1: $before ($parts_before)"
  echo "repository bytes after backup 2: $after ($parts_after)"
  echo "local cache bytes: $cache_before -> $cache_after"
} >> "$RES/meta.txt"
log "repository grew by $((after - before)) bytes on adding one file (cache: $((cache_after - cache_before)))"
echo "repository kept at $REPO" >> "$RES/meta.txt"
fi

# ---- mount ---------------------------------------------------------------------------------
start_mount() {
  /usr/bin/time -f '%M' -o "$WORK/mount-rss.txt" \
    "$ARC_BIN" --repo "$REPO" mount --utc --count-requests "$MNT" > "$WORK/mount.log" 2>&1 &
  MOUNT_PID=$!
  local _
  for _ in $(seq 600); do
    [[ -e $MNT/latest ]] && return 0
    kill -0 "$MOUNT_PID" 2>/dev/null || { log "mount exited early"; cat "$WORK/mount.log" >&2; MOUNT_PID=; return 1; }
    sleep 0.1
  done
  log "mount did not come up"; return 1
}
stop_mount() { # sets MOUNT_RSS_KB, MOUNT_REQUESTS
  local child
  child=$(pgrep -P "$MOUNT_PID" || true)
  [[ -n $child ]] && kill -INT "$child" 2>/dev/null
  wait "$MOUNT_PID" 2>/dev/null || true
  MOUNT_PID=
  while mountpoint -q "$MNT"; do fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT"; done
  MOUNT_RSS_KB=$(tail -1 "$WORK/mount-rss.txt" 2>/dev/null || echo 0)
  MOUNT_REQUESTS=$(grep -o 'kernel requests: .*' "$WORK/mount.log" | sed 's/kernel requests: //; s/,/;/g' || true)
}

# CPU seconds (user+sys) the mount process has used so far
mount_cpu() {
  local child
  child=$(pgrep -P "$MOUNT_PID" || true)
  [[ -n $child ]] || { echo 0; return; }
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$child/stat"
}

# timed STEP CMD...: wall seconds of CMD (bounded by STEP_TIMEOUT), and the mount's CPU time
timed() {
  local step=$1 rc=0 t0 t1 c0 c1; shift
  c0=$(mount_cpu)
  t0=$EPOCHREALTIME
  timeout "$STEP_TIMEOUT" "$@" > "$RES/logs/$step.log" 2>&1 || rc=$?
  t1=$EPOCHREALTIME
  c1=$(mount_cpu)
  local secs cpu status=ok
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  cpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')
  [[ $rc == 0 ]] || status=fail:$rc
  [[ $rc == 124 ]] && status=timeout
  echo "$step,$secs,$cpu,,,,$status" >> "$CSV"
  log "$(printf '%-20s %9ss  mount cpu %6ss  %s' "$step" "$secs" "$cpu" "$status")"
}

# stat_times STEP PATH: the first stat (cold), then REPEAT more, median (warm), in one process
stat_times() {
  local step=$1 path=$2 out
  out=$(timeout "$STEP_TIMEOUT" python3 - "$path" "$REPEAT" <<'PY' || echo "timeout timeout"
import os, statistics, sys, time
p, n = sys.argv[1], int(sys.argv[2])
def one():
    t = time.perf_counter()
    try:
        os.stat(p)
    except FileNotFoundError:
        pass
    return time.perf_counter() - t
first = one()
print("%.6f %.6f" % (first, statistics.median(one() for _ in range(n))))
PY
)
  read -r cold warm <<< "$out"
  [[ $cold == timeout ]] && log "$step: timed out"
  echo "$step-cold,$cold,,,,,ok" >> "$CSV"
  echo "$step-warm-median,$warm,,,,,ok" >> "$CSV"
  log "$(printf '%-20s cold %ss  warm median %ss' "$step" "$cold" "$warm")"
}

D=$MNT/latest$DIR
mount_step() { # NAME: one fresh mount, cold then warm
  local name=$1
  drop_caches
  start_mount
  case $name in
    ls-f) timed ls-f-cold sh -c "ls -f '$D' | wc -l"; timed ls-f-warm sh -c "ls -f '$D' | wc -l" ;;
    ls) timed ls-cold sh -c "ls '$D' > /dev/null"; timed ls-warm sh -c "ls '$D' > /dev/null" ;;
    ls-l) timed ls-l-cold sh -c "ls -l '$D' > /dev/null"; timed ls-l-warm sh -c "ls -l '$D' > /dev/null" ;;
    stat)
      stat "$MNT/latest$SRC" > /dev/null # the path down to the directory, not the directory
      stat_times stat "$D/$PROBE"
      stat_times missing "$D/no-such-name.eml"
      ;;
  esac
  stop_mount
  echo "mount-$name,,,$MOUNT_RSS_KB,,$MOUNT_REQUESTS,ok" >> "$CSV"
  log "mount for $name: peak RSS $MOUNT_RSS_KB KiB; requests: $MOUNT_REQUESTS"
}
for s in ${ARC_BIGDIR_STEPS:-stat ls-f ls ls-l}; do mount_step "$s"; done
echo "loadavg_end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$RES/meta.txt"
log "results: $RES"
column -s, -t < "$CSV" >&2
