#!/bin/sh
# Scale (issue 16): `check` and `prune` on a synthetic index of CHUNKS
# chunks, written through the engine's own index writer with no data
# (arc_engine::synthetic; sparse packs, one snapshot reaching 90 % of the
# packs). Prints wall time and peak RSS (GNU time's %M) of: generation,
# the first `check` (which also fills the index cache), a warm `check`,
# `prune --dry-run` (the plan alone) and `prune --instant` (plan, index
# rewrite, index cache update, deletion of the dead tenth); then the
# index cache's bytes per chunk (database plus sorted rows file). With a second binary (OLD_ARC), the same
# commands of that binary run on the same repository first, side by side.
#
#   benches/scale-index.sh [CHUNKS] [ARC_BINARY] [OLD_ARC]
#
# Deterministic: the same CHUNKS give the same index (seed 1, 512 chunks a
# pack). Needs CHUNKS * ~30 KiB of sparse space (nothing is written into
# the packs) and `cargo build --release -p arc-engine --example
# synthetic-index`. Timings need an idle machine; sizes and RSS do not.
set -eu
CHUNKS=${1:-1500000}
ARC=${2:-target/release/arc}
OLD=${3:-}
GEN=${GEN:-target/release/examples/synthetic-index}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/arc-scale-index.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
export ARC_PASSWORD=${ARC_PASSWORD:-bench}
export XDG_CACHE_HOME="$DIR/cache"
R="$DIR/repo"
measure() { # label, command...
    label=$1; shift
    /usr/bin/time -f "%e %M" -o "$DIR/t" "$@" >/dev/null 2>"$DIR/err" || { cat "$DIR/err" >&2; exit 1; }
    read -r secs kib <"$DIR/t"
    printf '%-28s %8s s %8s MiB\n' "$label" "$secs" "$((kib / 1024))"
}
"$ARC" -q -r "$R" init >/dev/null
measure "generate $CHUNKS chunks" "$GEN" "$R" "$CHUNKS" 512 1
if [ -n "$OLD" ]; then
    measure "old: check (cold cache)" "$OLD" -q -r "$R" check
    measure "old: check (warm)" "$OLD" -q -r "$R" check
    measure "old: prune --dry-run" "$OLD" -q -r "$R" prune --dry-run
    rm -rf "$XDG_CACHE_HOME"
fi
measure "check (cold cache)" "$ARC" -q -r "$R" check
measure "check (warm)" "$ARC" -q -r "$R" check
# The cache: its database and its sorted rows file.
size=$(find "$XDG_CACHE_HOME" \( -name 'index-*.redb' -o -name 'index-*.rows' \) -exec stat -c %s {} + |
    awk '{s+=$1} END {print s+0}')
measure "prune --dry-run" "$ARC" -q -r "$R" prune --dry-run
measure "prune --instant" "$ARC" -q -r "$R" prune --instant
measure "check after prune" "$ARC" -q -r "$R" check
echo "index cache after the first check: $size bytes, $((size / CHUNKS)) bytes per chunk"
