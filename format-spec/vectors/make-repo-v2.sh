#!/usr/bin/env bash
# How format-spec/vectors/repo-v2 was made (once, with arc with format v2, encrypted with the passphrase "arc frozen repo-v2").
# The repository is FROZEN: never regenerate it to make a test pass. A change
# that breaks reading it breaks every user's existing repositories.
# engine/tests/repo_v2.rs opens a copy with that passphrase, checks it with
# --read-data, and restores it.
set -euo pipefail
export ARC_PASSWORD="arc frozen repo-v2"
# The index cache is not part of the repository: keep it out of the way.
export XDG_CACHE_HOME=$(mktemp -d)
ARC=${ARC:-target/release/arc}
SRC=/tmp/arc-repo-v2-src
OUT=format-spec/vectors/repo-v2
rm -rf "$SRC" "$OUT"
mkdir -p "$SRC/dir/sub"
printf 'hello arc\n' > "$SRC/hello.txt"
: > "$SRC/empty"
python3 -c "
import sys
x = 0x9E3779B97F4A7C15
out = bytearray()
for _ in range(600 * 1024):
    x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF; x ^= x >> 7; x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
    out.append(x & 0xFF)
open('$SRC/dir/random.bin', 'wb').write(out)
open('$SRC/dir/sub/text.txt', 'w').write('line of text\n' * 5000)
"
ln -s ../hello.txt "$SRC/dir/link"
ln "$SRC/hello.txt" "$SRC/dir/hard"
mkfifo "$SRC/dir/fifo"
setfattr -n user.note -v frozen "$SRC/hello.txt" 2>/dev/null || true
chmod 0640 "$SRC/dir/sub/text.txt"
find "$SRC" -exec touch -h -d '2026-01-02 03:04:05.123456789 UTC' {} +
"$ARC" --repo "$OUT" init
"$ARC" --repo "$OUT" backup "$SRC" --tag v2 --host golden --time 2026-01-02T03:04:05Z
printf 'CREATE TABLE t (id int);\nINSERT INTO t VALUES (1),(2),(3);\n' |
  "$ARC" --repo "$OUT" backup --stdin --stdin-name db/dump.sql --tag v2 --host golden --time 2026-01-03T00:00:00Z
rm -f "$OUT/index.redb"
rm -rf "$SRC"
