#!/bin/sh
# Scale (issue 16): `check` and `prune` on a synthetic index of CHUNKS
# chunks, written through the engine's own index writer with no data
# (arc_engine::synthetic; sparse packs, one snapshot reaching 90 % of the
# packs). Prints, for each of: generation, the first `check` (which also
# fills the index cache), a warm `check`, `prune --dry-run` (the plan
# alone) and `prune --instant` (plan, index rewrite, index cache update,
# deletion of the dead tenth), its wall time, CPU seconds (user+sys),
# peak RSS (GNU time's %M), the peaks of its anonymous and of its
# file-backed resident memory (sampled from /proc every second: mapped
# pages of the index cache count in RSS, and are page cache, not heap), and
# the peak bytes of the cache directory during it (the cache, the fill's
# sorted runs and the command's scratch, which all live there) and of the
# command's scratch directories alone (`scratch-*`). Then the
# index cache's bytes per chunk (database plus sorted rows file). With a
# second binary (OLD_ARC), the same commands of that binary run on the
# same repository first, side by side.
#
#   benches/scale-index.sh [CHUNKS] [ARC_BINARY] [OLD_ARC]
#
# KEEP=DIR uses (and keeps) DIR instead of a temporary directory, and a
# repository generated there by an earlier run. STEPS picks the commands
# (default "check warm dry instant after"; at 100M chunks "check dry" is
# what fits the disk of a shared machine: each of those needs its own
# scratch beside the cache, ~80 bytes a chunk for `check`, ~85 for prune's
# plan; `instant` also writes the new index files before the old go).
#
# Deterministic: the same CHUNKS give the same index (seed 1, 512 chunks a
# pack). Needs CHUNKS * ~30 KiB of sparse space (nothing is written into
# the packs), about CHUNKS * 300 bytes of real disk at the peak, and
# `cargo build --release -p arc-engine --example synthetic-index`. Timings
# need an idle machine; sizes and RSS do not.
set -eu
CHUNKS=${1:-1500000}
ARC=${2:-target/release/arc}
OLD=${3:-}
GEN=${GEN:-target/release/examples/synthetic-index}
STEPS=${STEPS:-check warm dry instant after}
DIR=${KEEP:-$(mktemp -d "${TMPDIR:-/tmp}/arc-scale-index.XXXXXX")}
[ -n "${KEEP:-}" ] || trap 'rm -rf "$DIR"' EXIT
mkdir -p "$DIR"
export ARC_PASSWORD=${ARC_PASSWORD:-bench}
export XDG_CACHE_HOME="$DIR/cache"
R="$DIR/repo"
mkdir -p "$XDG_CACHE_HOME"
# Peaks of the command's RssAnon and RssFile (KiB), of the cache
# directory's size and of its scratch directories' (KiB) while the process
# `$1` (GNU time) runs.
sample() {
    anon=0 file=0 disk=0 scratch=0
    while kill -0 "$1" 2>/dev/null; do
        for c in $(pgrep -P "$1" || true); do
            s=$(awk '/^RssAnon:/ {a = $2} /^RssFile:/ {f = $2} END {print a + 0 " " f + 0}' "/proc/$c/status" 2>/dev/null || true)
            a=${s%% *} f=${s##* }
            [ "${a:-0}" -gt "$anon" ] && anon=$a
            [ "${f:-0}" -gt "$file" ] && file=$f
        done
        d=$(du -sk "$XDG_CACHE_HOME" 2>/dev/null | cut -f1)
        [ "${d:-0}" -gt "$disk" ] && disk=$d
        d=$(du -sk "$XDG_CACHE_HOME"/arc/*/scratch-* 2>/dev/null | awk '{s += $1} END {print s + 0}')
        [ "${d:-0}" -gt "$scratch" ] && scratch=$d
        sleep 1
    done
    echo "$anon $file $disk $scratch"
}
measure() { # label, command...
    label=$1; shift
    /usr/bin/time -f "%e %U %S %M" -o "$DIR/t" "$@" >/dev/null 2>"$DIR/err" &
    pid=$!
    sample "$pid" >"$DIR/s"
    wait "$pid" || { cat "$DIR/err" >&2; exit 1; }
    read -r secs user sys kib <"$DIR/t"
    read -r anon file disk scratch <"$DIR/s"
    printf '%-28s %8s s %8s s CPU %6s MiB peak (anon %s, file %s) %7s MiB cache dir %7s MiB scratch\n' \
        "$label" "$secs" "$(echo "$user $sys" | awk '{print $1 + $2}')" "$((kib / 1024))" "$((anon / 1024))" \
        "$((file / 1024))" "$((disk / 1024))" "$((scratch / 1024))"
}
has() { case " $STEPS " in *" $1 "*) return 0 ;; esac; return 1; }
if [ ! -f "$R/config" ]; then
    "$ARC" -q -r "$R" init >/dev/null
    measure "generate $CHUNKS chunks" "$GEN" "$R" "$CHUNKS" 512 1
fi
echo "repository: $(du -sk "$R" | cut -f1) KiB on disk (the packs are sparse)"
if [ -n "$OLD" ]; then
    rm -rf "$XDG_CACHE_HOME" && mkdir -p "$XDG_CACHE_HOME"
    measure "old: check (cold cache)" "$OLD" -q -r "$R" check
    measure "old: check (warm)" "$OLD" -q -r "$R" check
    measure "old: prune --dry-run" "$OLD" -q -r "$R" prune --dry-run
fi
# A cold cache for the first `check` (without it, the first command fills it).
has check && rm -rf "$XDG_CACHE_HOME" && mkdir -p "$XDG_CACHE_HOME"
has check && measure "check (cold cache)" "$ARC" -q -r "$R" check
has warm && measure "check (warm)" "$ARC" -q -r "$R" check
# The cache: its database and its sorted rows file.
size=$(find "$XDG_CACHE_HOME" \( -name 'index-*.redb' -o -name 'index-*.rows' \) -exec stat -c %s {} + |
    awk '{s+=$1} END {print s+0}')
has dry && measure "prune --dry-run" "$ARC" -q -r "$R" prune --dry-run
has instant && measure "prune --instant" "$ARC" -q -r "$R" prune --instant
has after && measure "check after prune" "$ARC" -q -r "$R" check
echo "index cache after the first command: $size bytes, $((size / CHUNKS)) bytes per chunk"
