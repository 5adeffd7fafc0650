#!/usr/bin/env bash
# A/B of `arc init` options (frame size, compression levels) with one arc binary, by CPU
# work and stored bytes, for a machine shared with other work, where wall time says little.
#
#   benches/init_ab.sh SHAPE ROUNDS "INIT ARGS A" "INIT ARGS B" [...]
#   e.g. benches/init_ab.sh spool 2 "--frame-size 256K" "--frame-size 1M"
#        benches/init_ab.sh dump 2 "--stream-compression 3" "--stream-compression 1"
#
# SHAPE is a benches/run.sh workload: spool or www (a tree), dump (day1.sql through --stdin).
# Each round runs every variant in turn (alternating, so load drifts hit all alike):
#   backup   into a new encrypted repository: user+sys CPU seconds, wall, peak RSS;
#   stored   every byte under the repository but index.redb (a rebuildable cache, as in
#            run.sh), exact;
#   restore  of the snapshot into a tmpfs, repository files warm in the page cache: CPU, wall,
#            peak RSS; checked (file count and bytes; dump: cmp);
#   mount    (trees) `cp -a` of the first top-level directory (www: site01, one site of ten;
#            spool: one user's mail) through a fresh `arc mount` into a tmpfs: cp's CPU and
#            wall, and the mount process's CPU for its whole life (start-up, the copy,
#            unmount).
# Output: one line per measurement on stdout, e.g.
#   round 1 variant "--frame-size 1M" spool backup cpu 21.34 wall 15.02 rss_kb 180000
#
# Environment: ARC_BIN [target/release/arc], ARC_BENCH_DIR (workloads, as run.sh makes them:
# spool/, www/, dump/day1.sql) [/var/tmp/arc-bench]. Needs root (tmpfs, FUSE), GNU time.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ARC_BIN=$(realpath "${ARC_BIN:-$(dirname "$HERE")/target/release/arc}")
BENCH_DIR=${ARC_BENCH_DIR:-/var/tmp/arc-bench}
SHAPE=$1 ROUNDS=$2
shift 2
[[ $# -ge 2 ]] || { echo "usage: $0 SHAPE ROUNDS 'INIT ARGS A' 'INIT ARGS B' [...]" >&2; exit 2; }
case $SHAPE in
  spool | www) SRC=$BENCH_DIR/$SHAPE; [[ -d $SRC ]] ;;
  dump) SRC=$BENCH_DIR/dump/day1.sql; [[ -f $SRC ]] ;;
  *) echo "unknown shape $SHAPE (spool, www, dump)" >&2; exit 2 ;;
esac || { echo "$SRC missing: run benches/run.sh once (or gen_workloads.py)" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/arc-init-ab.XXXXXX")
MNT=$WORK/mnt T=$WORK/tmpfs
mkdir -p "$MNT" "$T"
MOUNT_PID=
cleanup() {
  [[ -n $MOUNT_PID ]] && kill -INT "$(pgrep -P "$MOUNT_PID")" 2>/dev/null
  while mountpoint -q "$MNT"; do fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT"; done
  while mountpoint -q "$T"; do umount "$T"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
export ARC_PASSWORD=arc-bench XDG_CACHE_HOME=$WORK/cache

fresh_tmpfs() { while mountpoint -q "$T"; do umount "$T"; done; mount -t tmpfs -o size=4g arc-init-ab "$T"; }
warm() { tar -cf - "$@" 2>/dev/null | cat >/dev/null; }
# timed LABEL CMD...: runs CMD under GNU time, prints "LABEL cpu U+S wall W rss_kb R".
timed() {
  local label=$1 tv=$WORK/time.txt
  shift
  /usr/bin/time -f '%e %U %S %M' -o "$tv" "$@" >"$WORK/out.log" 2>&1 || { echo "$label FAILED"; cat "$WORK/out.log" >&2; exit 1; }
  read -r wall user sys rss <"$tv"
  echo "$label cpu $(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }') wall $wall rss_kb $rss"
}
stored() { echo $(($(du -sb "$1" | cut -f1) - $(stat -c %s "$1/index.redb" 2>/dev/null || echo 0))); }
count() { echo "$(find "$1" | wc -l) $(find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"; }
[[ $SHAPE == dump ]] || EXPECT=$(count "$SRC")

for round in $(seq 1 "$ROUNDS"); do
  v=0
  for args in "$@"; do
    v=$((v + 1))
    repo=$WORK/repo-$v label="round $round variant \"$args\" $SHAPE"
    rm -rf "$repo"
    read -r -a init <<<"$args"
    "$ARC_BIN" --repo "$repo" init "${init[@]}" >/dev/null
    if [[ $SHAPE == dump ]]; then
      warm "$SRC"; sync
      timed "$label backup" bash -c '"$1" --repo "$2" backup --stdin --stdin-name shop.sql <"$3"' _ "$ARC_BIN" "$repo" "$SRC"
    else
      warm "$SRC"; sync
      timed "$label backup" "$ARC_BIN" --repo "$repo" backup "$SRC"
    fi
    echo "$label stored $(stored "$repo")"
    fresh_tmpfs; warm "$repo"
    timed "$label restore" "$ARC_BIN" --repo "$repo" restore latest --target "$T/r"
    if [[ $SHAPE == dump ]]; then
      cmp -s "$T/r/shop.sql" "$SRC" || { echo "$label restore MISMATCH"; exit 1; }
    else
      got=$(count "$T/r${SRC}")
      [[ $got == "$EXPECT" ]] || { echo "$label restore MISMATCH: $got, want $EXPECT"; exit 1; }
    fi
    umount "$T"
    if [[ $SHAPE != dump ]]; then
      fresh_tmpfs; warm "$repo"
      /usr/bin/time -f '%e %U %S %M' -o "$WORK/mount-time.txt" "$ARC_BIN" --repo "$repo" mount --utc "$MNT" \
        >"$WORK/mount.log" 2>&1 &
      MOUNT_PID=$!
      for _ in $(seq 600); do [[ -e $MNT/latest ]] && break; sleep 0.1; done
      site=$(find "$MNT/latest${SRC}" -mindepth 1 -maxdepth 1 | sort | head -1)
      timed "$label mount_cp_$(basename "$site")" cp -a "$site" "$T/"
      [[ $(count "$T/$(basename "$site")") == "$(count "$SRC/$(basename "$site")")" ]] ||
        { echo "$label mount copy MISMATCH"; exit 1; }
      kill -INT "$(pgrep -P "$MOUNT_PID")"
      wait "$MOUNT_PID" || true
      MOUNT_PID=
      while mountpoint -q "$MNT"; do fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT"; done
      read -r wall user sys rss <"$WORK/mount-time.txt"
      echo "$label mount_process cpu $(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }') wall $wall rss_kb $rss"
      umount "$T"
    fi
  done
done
