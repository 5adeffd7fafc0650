#!/bin/sh
# Scale (issue 16): the index cache of a synthetic index of CHUNKS chunks
# (arc_engine::synthetic, written through the engine's own index writer,
# no data): its fill on a new host, its bytes per chunk, and dedup lookups
# per second with a cold page cache inside a memory limit of LIMIT_MIB
# (default 1024: page cache and process together).
#
#   benches/scale-lookups.sh [CHUNKS] [LOOKUPS] [ARC_BINARY]
#
# Steps: generate; `arc check` (fills the cache: wall time, peak RSS);
# `index-lookups` warm; then the cache files are evicted from the page
# cache (posix_fadvise DONTNEED on each, which leaves other programs' pages
# alone) and `index-lookups` runs again inside a memory cgroup limited to
# LIMIT_MIB. The cgroup is, in this order of preference: a transient
# `systemd-run --scope -p MemoryMax=` (when systemd runs the machine), a
# cgroup v2 directory under the current one, or a cgroup v1 memory
# directory under the current one (`memory.limit_in_bytes`, which counts
# page cache too); the script says which. Lookups are LOOKUPS ids the
# repository holds and LOOKUPS it does not, one thread, then LOOKUPS other
# held ids from THREADS threads (default 4, as a backup's file workers);
# the JSON also gives the sorted file's rows read per lookup of each kind.
# BATCHES (e.g. "0 1 64 1024") repeats the warm and the cold run for each
# batch size: the single-thread lookups ask that many ids at a time
# (`contains_batch`, `lookup_batch`; 0 is one `contains` per id).
# Then `prune --dry-run`, and a warm `check` unless WARM_CHECK=0. With
# KEEP and REUSE_CACHE=1, a cache filled by an earlier run is used. With
# CHECK=0 neither `check` nor `prune` runs and the first `index-lookups`
# fills the cache: `check` and `prune` spill ~120 bytes a chunk of scratch
# beside the cache (12 GB at 100M chunks), more disk than a shared machine
# may have.
#
# Needs root for the cgroup, `cargo build --release -p arc-engine
# --example synthetic-index --example index-lookups`, and about CHUNKS *
# 150 bytes of disk (index files, trees, the cache, the fill's sorted
# runs). Deterministic (seed 1, 512 chunks a pack). Rates need an idle
# machine; sizes do not.
set -eu
CHUNKS=${1:-10000000}
LOOKUPS=${2:-2000000}
ARC=${3:-target/release/arc}
LIMIT_MIB=${LIMIT_MIB:-1024}
GEN=${GEN:-target/release/examples/synthetic-index}
LOOK=${LOOK:-target/release/examples/index-lookups}
# KEEP=DIR: use (and keep) DIR, reusing a repository generated there.
DIR=${KEEP:-$(mktemp -d "${TMPDIR:-/tmp}/arc-scale-lookups.XXXXXX")}
CG=
cleanup() {
    [ -n "$CG" ] && [ -d "$CG" ] && rmdir "$CG" 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT
export ARC_PASSWORD=${ARC_PASSWORD:-bench}
export XDG_CACHE_HOME="$DIR/cache"
R="$DIR/repo"
measure() { # label, command...
    label=$1; shift
    /usr/bin/time -f "%e %M" -o "$DIR/t" "$@" >"$DIR/out" 2>"$DIR/err" || { cat "$DIR/err" >&2; exit 1; }
    read -r secs kib <"$DIR/t"
    printf '%-34s %8s s %8s MiB\n' "$label" "$secs" "$((kib / 1024))"
}
evict() {
    find "$XDG_CACHE_HOME" -type f -exec python3 -c '
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)' {} +
}
# Runs a command inside a memory limit of LIMIT_MIB.
limited() {
    if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && command -v systemd-run >/dev/null; then
        echo "memory limit: systemd-run --scope -p MemoryMax=${LIMIT_MIB}M" >&2
        systemd-run --quiet --scope -p "MemoryMax=${LIMIT_MIB}M" -p MemorySwapMax=0 "$@"
        return
    fi
    v2=$(sed -n 's/^0:://p' /proc/self/cgroup)
    if [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
        CG="/sys/fs/cgroup$v2/arc-bench-$$"
        mkdir "$CG"
        echo "$((LIMIT_MIB * 1024 * 1024))" >"$CG/memory.max"
        echo "memory limit: cgroup v2 $CG memory.max" >&2
    else
        v1=$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup)
        CG="/sys/fs/cgroup/memory$v1/arc-bench-$$"
        mkdir "$CG"
        echo "$((LIMIT_MIB * 1024 * 1024))" >"$CG/memory.limit_in_bytes"
        echo "memory limit: cgroup v1 $CG memory.limit_in_bytes" >&2
    fi
    sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' sh "$CG" "$@"
}
if [ ! -f "$R/config" ]; then
    "$ARC" -q -r "$R" init >/dev/null
    measure "generate $CHUNKS chunks" "$GEN" "$R" "$CHUNKS" 512 1
fi
if [ -n "${REUSE_CACHE:-}" ] && [ -d "$XDG_CACHE_HOME" ]; then
    : # KEEP's cache from an earlier run, already filled
elif [ "${CHECK:-1}" = 0 ]; then
    rm -rf "$XDG_CACHE_HOME"
    # The lookups' own open fills the cache (`open_and_fill_s`).
    measure "index-lookups (fills the cache)" "$LOOK" "$XDG_CACHE_HOME/arc" "$R" "$CHUNKS" 1 512 1
else
    rm -rf "$XDG_CACHE_HOME"
    measure "check (fills the cache)" "$ARC" -q -r "$R" check
fi
size=$(find "$XDG_CACHE_HOME" \( -name 'index-*.redb' -o -name 'index-*.rows' \) -exec stat -c %s {} + |
    awk '{s+=$1} END {print s+0}')
echo "index cache: $size bytes, $(echo "$size $CHUNKS" | awk '{printf "%.1f", $1 / $2}') bytes per chunk"
# Warm: every cache file read once, so that it is in the page cache
# (a fill leaves only what the machine's other work did not evict).
# BATCHES="0 1 64 1024": one warm and one cold run per batch size (BATCH
# of index-lookups; 0 is one `contains` per id), each cold run in its own
# cgroup after its own eviction. WARM=0 leaves the warm runs out.
# Each run looks up other ids (SALT, from SALT0 + 1 on): this VM's disk is cached by its
# host, and ids a run before read would come from the host's memory.
n=0
for b in ${BATCHES:-0}; do
    n=$((n + 1)); salt=$((${SALT0:-0} + n))
    if [ "${WARM:-1}" != 0 ]; then
        find "$XDG_CACHE_HOME" -type f -exec cat {} + >/dev/null
        env BATCH="$b" SALT="$salt" "$LOOK" "$XDG_CACHE_HOME/arc" "$R" "$CHUNKS" "$LOOKUPS" 512 1 >"$DIR/warm"
        echo "warm, batch $b: $(cat "$DIR/warm")"
    fi
    evict
    limited env BATCH="$b" SALT="$salt" "$LOOK" "$XDG_CACHE_HOME/arc" "$R" "$CHUNKS" "$LOOKUPS" 512 1 >"$DIR/cold"
    echo "cold, ${LIMIT_MIB} MiB, batch $b: $(cat "$DIR/cold")"
    if [ -n "$CG" ] && [ -f "$CG/memory.max_usage_in_bytes" ]; then
        echo "cgroup peak (process and page cache): $(($(cat "$CG/memory.max_usage_in_bytes") / 1048576)) MiB"
    elif [ -n "$CG" ] && [ -f "$CG/memory.peak" ]; then
        echo "cgroup peak (process and page cache): $(($(cat "$CG/memory.peak") / 1048576)) MiB"
    fi
    [ -n "$CG" ] && rmdir "$CG" 2>/dev/null || true
    CG=
done
[ "${CHECK:-1}" = 0 ] && exit 0
measure "prune --dry-run" "$ARC" -q -r "$R" prune --dry-run
[ "${WARM_CHECK:-1}" = 0 ] || measure "check (warm cache)" "$ARC" -q -r "$R" check
