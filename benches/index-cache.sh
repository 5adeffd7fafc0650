#!/bin/sh
# Index cache size: bytes of the local index cache per blob after one
# backup of the spool and after a second backup of its day-2 state
# (issue 11, 16). The cache is the redb database (recent rows, packs,
# index files, and the change-detection cache) plus the sorted rows file
# beside it; both are counted, and shown apart.
#
#   benches/index-cache.sh [ARC_BINARY] [DATA_DIR] [SCALE]
#
# Generates DATA_DIR/spool with gen_workloads.py at SCALE (default 0.25:
# 50,000 messages) unless present, backs it up into a fresh repository,
# applies --spool-day2, backs up again, reverts. Prints the file sizes and
# bytes per blob (blobs from `arc stats --json`: data plus tree blobs),
# and, with `cargo build --release -p arc-engine --example
# index-cache-sizes`, the change-detection cache's share of the database.
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
export XDG_CACHE_HOME="$REPO/cache"
"$ARC" -q -r "$REPO/r" init >/dev/null
blobs() { "$ARC" -q -r "$REPO/r" --json stats | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["data_blobs"] + d["tree_blobs"])'; }
sizes() { # prints: db bytes, sorted bytes
    db=$(find "$XDG_CACHE_HOME" -name 'index-*.redb' -exec stat -c %s {} + | awk '{s+=$1} END {print s+0}')
    rows=$(find "$XDG_CACHE_HOME" -name 'index-*.rows' -exec stat -c %s {} + | awk '{s+=$1} END {print s+0}')
    echo "$db $rows"
}
SIZES=${SIZES:-target/release/examples/index-cache-sizes}
report() { # label, blobs
    set -- "$1" "$2" $(sizes)
    total=$(($3 + $4))
    echo "$1: $2 blobs; cache $total bytes ($((total / $2)) per blob): database $3 ($(($3 / $2)) per blob), sorted rows $4 ($(($4 / $2)) per blob)"
    # The database's share that is the change-detection cache (one record
    # per directory leaf with its files' inodes and ctimes, not per blob).
    if [ -x "$SIZES" ]; then
        c=$("$SIZES" "$(find "$XDG_CACHE_HOME" -name 'index-*.redb' | head -1)" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["change_cache_bytes"])')
        echo "  of the database, change cache pages: $c bytes; index without them: $((total - c)) bytes, $(((total - c) / $2)) per blob"
    fi
}
"$ARC" -q -r "$REPO/r" backup "$DATA/spool" >/dev/null
report "after one backup" "$(blobs)"
python3 "$HERE/gen_workloads.py" "$DATA" --spool-day2 apply >/dev/null
"$ARC" -q -r "$REPO/r" backup "$DATA/spool" >/dev/null
report "after two backups" "$(blobs)"
