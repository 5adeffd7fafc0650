#!/bin/sh
# Index cache size: bytes of index.redb per blob after one backup of the
# spool and after a second backup of its day-2 state (issue 11, 16).
#
#   benches/index-cache.sh [ARC_BINARY] [DATA_DIR] [SCALE]
#
# Generates DATA_DIR/spool with gen_workloads.py at SCALE (default 0.25:
# 50,000 messages) unless present, backs it up into a fresh repository,
# applies --spool-day2, backs up again, reverts. Prints the file size and
# bytes per blob (blobs from `arc stats --json`: data plus tree blobs).
set -eu
ARC=${1:-target/release/arc}
DATA=${2:-target/bench}
SCALE=${3:-0.25}
HERE=$(dirname "$0")
[ -d "$DATA/spool" ] || python3 "$HERE/gen_workloads.py" "$DATA" --shapes spool --scale "$SCALE"
python3 "$HERE/gen_workloads.py" "$DATA" --spool-day2 revert >/dev/null 2>&1 || true
REPO=$(mktemp -d "${TMPDIR:-/tmp}/arc-index-cache.XXXXXX")
trap 'rm -rf "$REPO"; python3 "$HERE/gen_workloads.py" "$DATA" --spool-day2 revert >/dev/null 2>&1 || true' EXIT
export ARC_PASSWORD=${ARC_PASSWORD:-bench}
"$ARC" -q -r "$REPO/r" init >/dev/null
blobs() { "$ARC" -q -r "$REPO/r" --json stats | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["data_blobs"] + d["tree_blobs"])'; }
"$ARC" -q -r "$REPO/r" backup "$DATA/spool" >/dev/null
s1=$(stat -c %s "$REPO/r/index.redb"); b1=$(blobs)
python3 "$HERE/gen_workloads.py" "$DATA" --spool-day2 apply >/dev/null
"$ARC" -q -r "$REPO/r" backup "$DATA/spool" >/dev/null
s2=$(stat -c %s "$REPO/r/index.redb"); b2=$(blobs)
echo "after one backup:  index.redb $s1 bytes, $b1 blobs, $((s1 / b1)) bytes per blob"
echo "after two backups: index.redb $s2 bytes, $b2 blobs, $((s2 / b2)) bytes per blob"
