#!/usr/bin/env bash
# Issue 16's "10,000 snapshots" row: a repository of COUNT daily snapshots of
# a small changing tree (27 years at 10,000), and what having that many
# snapshots costs the commands that list or start from them:
#
#   `arc snapshots` (target < 1 s), the start-up overhead of a backup
#   (a no-change backup of a one-file tree into this repository minus the
#   same into a repository with one snapshot; target < 0.5 s), mount
#   start-up (until the snapshot list is readable; target < 1 s), and
#   `arc check` (trees checked against the distinct trees that exist:
#   each tree once, not snapshots x entries).
#
#   benches/snapshots.sh [COUNT]        COUNT: snapshots to generate [10000]
#
# Environment: ARC_BENCH_DIR [/var/tmp/arc-bench], ARC_BENCH_RUNS [3],
# ARC_BIN [target/release/arc], ARC_BENCH_SKIP_BUILD [0].
# The repository is generated once (engine/examples/gen_snapshots.rs, in one
# process; deterministic) and kept in $ARC_BENCH_DIR/snapshots-COUNT; the
# timings use a copy of the passphrase-encrypted repository as users have it.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
COUNT=${1:-10000}
BENCH_DIR=${ARC_BENCH_DIR:-/var/tmp/arc-bench}
RUNS=${ARC_BENCH_RUNS:-3}
ARC_BIN=${ARC_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/arc}
GEN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/gen_snapshots
export ARC_PASSWORD=arc-bench
W=$BENCH_DIR/snapshots-$COUNT
export XDG_CACHE_HOME=$W/cache
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ ${ARC_BENCH_SKIP_BUILD:-0} != 1 ]]; then
  (cd "$ROOT" && cargo build --release -q -p arc-cli && cargo build --release -q -p arc-engine --example gen_snapshots)
fi
[[ -x $ARC_BIN && -x $GEN ]] || { echo "need $ARC_BIN and $GEN (cargo build --release -p arc-cli; cargo build --release -p arc-engine --example gen_snapshots)" >&2; exit 1; }

if [[ ! -f $W/generated ]]; then
  log "generating $COUNT snapshots in $W/repo (once)"
  rm -rf "$W" && mkdir -p "$W"
  "$ARC_BIN" --repo "$W/repo" init --quiet >/dev/null
  "$GEN" "$W/repo" "$W/src" "$COUNT" > "$W/generated.tmp"
  mv "$W/generated.tmp" "$W/generated"
fi
cat "$W/generated"

# Median of RUNS wall-clock seconds of a command.
median_time() {
  local i all=()
  for ((i = 0; i < RUNS; i++)); do
    /usr/bin/time -o "$W/time" -f %e "$@" >/dev/null 2>&1
    all+=("$(tail -1 "$W/time")")
  done
  printf '%s\n' "${all[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

one=$W/one
rm -rf "$one" "$W/tiny" && mkdir -p "$W/tiny" && echo tiny > "$W/tiny/file"
"$ARC_BIN" --repo "$one" init --quiet >/dev/null
"$ARC_BIN" --repo "$one" backup "$W/tiny" --quiet >/dev/null
"$ARC_BIN" --repo "$W/repo" backup "$W/tiny" --quiet >/dev/null

snaps=$(median_time "$ARC_BIN" --repo "$W/repo" snapshots)
snaps_json=$(median_time "$ARC_BIN" --repo "$W/repo" snapshots --json)
snaps_one=$(median_time "$ARC_BIN" --repo "$one" snapshots)
backup_many=$(median_time "$ARC_BIN" --repo "$W/repo" backup "$W/tiny" --quiet)
backup_one=$(median_time "$ARC_BIN" --repo "$one" backup "$W/tiny" --quiet)

mount_start() { # REPO: seconds until the mount lists its snapshots
  local mnt=$W/mnt t0 t1 pid
  mkdir -p "$mnt"
  t0=$(date +%s.%N)
  "$ARC_BIN" --repo "$1" mount "$mnt" >/dev/null 2>&1 &
  pid=$!
  until [[ -n $(ls "$mnt/snapshots" 2>/dev/null | head -1) ]]; do sleep 0.01; done
  t1=$(date +%s.%N)
  fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt"
  wait "$pid" || true
  printf '%.2f\n' "$(echo "$t1 - $t0" | bc)"
}
mounts=()
for ((i = 0; i < RUNS; i++)); do mounts+=("$(mount_start "$W/repo")"); done
mount_many=$(printf '%s\n' "${mounts[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')

t0=$(date +%s.%N)
check=$("$ARC_BIN" --repo "$W/repo" --json check)
t1=$(date +%s.%N)
check_s=$(printf '%.2f' "$(echo "$t1 - $t0" | bc)")
trees=$(printf '%s' "$check" | python3 -c 'import json,sys; print(json.load(sys.stdin)["trees"])')
tree_blobs=$("$ARC_BIN" --repo "$W/repo" --json stats | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("tree_blobs", d.get("trees", "?")))' 2>/dev/null || echo "?")

cat <<EOF

### $COUNT snapshots ($(cat "$W/generated"))

Machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; arc $(git -C "$ROOT" rev-parse --short HEAD); medians of $RUNS runs.

| | with $COUNT snapshots | with 1 snapshot | target |
|---|---|---|---|
| \`arc snapshots\` | $snaps s | $snaps_one s | < 1 s |
| \`arc snapshots --json\` | $snaps_json s | | |
| no-change backup of a one-file tree | $backup_many s | $backup_one s | overhead < 0.5 s |
| mount until \`snapshots/\` lists | $mount_many s | | < 1 s |
| \`arc check\` (no --read-data) | $check_s s, $trees trees checked | | each distinct tree once |
| tree blobs in the repository (\`arc stats\`) | $tree_blobs | | |
EOF
