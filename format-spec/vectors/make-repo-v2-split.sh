#!/usr/bin/env bash
# How format-spec/vectors/repo-v2-split was made (once, with arc at the
# commit that added this script; encrypted with the passphrase
# "arc frozen repo-v2-split"). It freezes what repo-v2 predates: a config
# listing the features trees-v2 and index-v2, a directory split into
# several tree blobs, a file whose chunk list is a blob of its own, index v2
# files, and a pending prune mark (format-spec/v2/protocol.md section 5).
# The repository is FROZEN: never regenerate it to make a test pass. A change
# that breaks reading it breaks every user's existing repositories.
# engine/tests/repo_v2.rs opens a copy, checks it with --read-data, restores
# every snapshot and compares it with what this script generated.
set -euo pipefail
export ARC_PASSWORD="arc frozen repo-v2-split"
export XDG_CACHE_HOME=$(mktemp -d)
ARC=${ARC:-target/release/arc}
SRC=/tmp/arc-repo-v2-split-src
OUT=format-spec/vectors/repo-v2-split
rm -rf "$SRC" "$OUT"
mkdir -p "$SRC/big" "$SRC/dir"
python3 -c "
x = 0x9E3779B97F4A7C15
out = bytearray()
for _ in range(600 * 1024):
    x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF; x ^= x >> 7; x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
    out.append(x & 0xFF)
open('$SRC/dir/random.bin', 'wb').write(out)
for i in range(3000):
    open('$SRC/big/f%05d' % i, 'w').write('file %d\n' % i)
"
find "$SRC" -exec touch -h -d '2026-02-01 00:00:00 UTC' {} +
# Small chunks, so that random.bin has more chunks than a node holds inline
# (tree_v2::INLINE_CHUNKS_MAX) and its chunk list is a blob of its own.
"$ARC" --repo "$OUT" init --chunk-min 1K --chunk-avg 4K --chunk-max 16K --prune-grace 1s
"$ARC" --repo "$OUT" backup "$SRC" --tag one --host golden --time 2026-02-01T00:00:00Z
printf 'changed 1500\n' > "$SRC/big/f01500"
printf 'file 3000\n' > "$SRC/big/f03000"
touch -h -d '2026-02-02 00:00:00 UTC' "$SRC/big/f01500" "$SRC/big/f03000" "$SRC/big"
"$ARC" --repo "$OUT" backup "$SRC" --tag two --host golden --time 2026-02-02T00:00:00Z
printf 'CREATE TABLE t (id int);\nINSERT INTO t VALUES (1),(2),(3);\n' |
  "$ARC" --repo "$OUT" backup --stdin --stdin-name db/dump.sql --tag two --host golden --time 2026-02-03T00:00:00Z
ONE=$("$ARC" --repo "$OUT" --json snapshots --tag one | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
"$ARC" --repo "$OUT" forget "$ONE"
sleep 2
# Phase 1 only: the mark waits for its grace (1 s of storage time) and for
# a later prune; the frozen repository keeps it pending.
"$ARC" --repo "$OUT" prune --max-unused 0%
ls "$OUT/marks" | grep -q . || { echo "no prune mark was written" >&2; exit 1; }
rm -rf "$SRC" "$XDG_CACHE_HOME"
