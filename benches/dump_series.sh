#!/usr/bin/env bash
# Dump series: what day 2 adds, and what the index costs, for each way of chunking dump
# streams (issue 16, "dump series with scattered updates"), side by side with restic.
#
#   benches/dump_series.sh
#
# Series (all generated deterministically):
#   scattered-mysql, scattered-pg  benches/gen_dump_series.py: one 400,000-row table, day 2
#                                  with 1 % of the rows updated at random places and 0.5 %
#                                  appended; mysqldump extended INSERTs and pg_dump COPY
#   clustered                      the dump shape of benches/gen_workloads.py (updates in
#                                  runs, rows appended), at ARC_SERIES_CLUSTER_SCALE
#   pgbench                        real PostgreSQL: pg_dump of `pgbench -i -s 4` (400,000
#                                  accounts) before and after 4,000 pgbench transactions
#                                  (benches/gen_pgbench_series.sh; skipped without PostgreSQL)
# Options:
#   arc S/A/M      arc with stream chunks of min S, average A, max M (`init --stream-chunk-*`);
#                  day 2 is stored with stream deltas (format-spec/v2/streams.md section 4)
#   before         ARC_BIN_BEFORE (an arc without stream deltas), 64K/256K/1M, if set
#   restic         restic 0.14 (its fixed 512 KiB..8 MiB chunker, compression auto)
#   rows:A, delta-chunks, delta  benches/dump_rows.py: chunks aligned to dump rows; each
#                  new chunk as a zstd delta against its day-1 counterpart; zstd --patch-from
# Columns: raw bytes day 2 adds (uncompressed new chunks), stored bytes day 2 adds (growth
# of the repository directory), chunks day 2 adds, index bytes (index files plus the
# local index cache) after day 2, and those per byte of packs.
#
# Environment: ARC_BIN [target/release/arc], ARC_BIN_BEFORE [unset], ARC_SERIES_DIR
# [/var/tmp/arc-dump-series], ARC_SERIES_CLUSTER_SCALE [0.25], ARC_SERIES_SEED [20261206],
# ARC_SERIES_OPTIONS [all four chunk sizes; e.g. "64K 256K 1M" for today's only],
# ARC_SERIES_SIMULATE [1; 0 skips benches/dump_rows.py's simulated options],
# ARC_SERIES_TEMPLATE [unset; a repository path, made if missing: every arc repository of the
# default chunk sizes (64K/256K/1M, and `before`) is made with --copy-chunker-params-from it].
# Sizes are exact and repeatable for one repository, but each `init` draws new secret content
# keys, which move the chunk boundaries: day 2 of scattered-pg varies from 231 to 302 KB over
# three key sets. To compare two arcs (ARC_BIN_BEFORE, or a change to the pairing), pin the
# keys with ARC_SERIES_TEMPLATE and repeat with a few templates. No timing is recorded.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
ARC_BIN=${ARC_BIN:-$ROOT/target/release/arc}
DIR=${ARC_SERIES_DIR:-/var/tmp/arc-dump-series}
SCALE=${ARC_SERIES_CLUSTER_SCALE:-0.25}
SEED=${ARC_SERIES_SEED:-20261206}
export ARC_PASSWORD=dump-series RESTIC_PASSWORD=dump-series
command -v restic >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y restic >/dev/null; }
command -v zstd >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y zstd >/dev/null; }
[[ -x $ARC_BIN ]] || { echo "no arc binary at $ARC_BIN (cargo build --release)" >&2; exit 2; }
TEMPLATE=${ARC_SERIES_TEMPLATE:-}
[[ -z $TEMPLATE || -d $TEMPLATE ]] || "$ARC_BIN" --repo "$TEMPLATE" init >/dev/null

mkdir -p "$DIR"
[[ -f $DIR/scattered/pg/day2.sql ]] || python3 "$HERE/gen_dump_series.py" "$DIR/scattered" --seed "$SEED"
python3 "$HERE/gen_workloads.py" "$DIR/clustered" --shapes dump --scale "$SCALE" >/dev/null
SERIES="scattered-mysql scattered-pg clustered"
# pgbench_history's mtime column is the transactions' wall clock, so day 2 differs in
# those bytes from run to run; the sizes do not depend on them.
[[ -f $DIR/pgbench/day2.sql ]] || "$HERE/gen_pgbench_series.sh" "$DIR/pgbench" >/dev/null || true
[[ -f $DIR/pgbench/day2.sql ]] && SERIES="$SERIES pgbench"
declare -A DAY1=([scattered-mysql]=$DIR/scattered/mysql/day1.sql [scattered-pg]=$DIR/scattered/pg/day1.sql
                 [clustered]=$DIR/clustered/dump/day1.sql [pgbench]=$DIR/pgbench/day1.sql)
declare -A DAY2=([scattered-mysql]=$DIR/scattered/mysql/day2.sql [scattered-pg]=$DIR/scattered/pg/day2.sql
                 [clustered]=$DIR/clustered/dump/day2.sql [pgbench]=$DIR/pgbench/day2.sql)
OPTIONS=${ARC_SERIES_OPTIONS:-"64K 256K 1M|16K 64K 256K|4K 16K 64K|1K 4K 16K"}

size() { du -sb "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
OUT=$DIR/results.tsv
printf 'series\toption\tday1_bytes\tday2_bytes\tday2_raw_added\tday2_stored_added\tday2_chunks_added\tindex_bytes\tindex_per_pack_byte\n' > "$OUT"

for series in $SERIES; do
  d1=${DAY1[$series]} d2=${DAY2[$series]}
  b1=$(stat -c %s "$d1") b2=$(stat -c %s "$d2")
  IFS='|' read -ra opts <<< "$OPTIONS"
  [[ -n ${ARC_BIN_BEFORE:-} ]] && opts+=("before")
  for p in "${opts[@]}"; do
    bin=$ARC_BIN label=arc
    if [[ $p == before ]]; then bin=$ARC_BIN_BEFORE label="arc without deltas" p="64K 256K 1M"; fi
    read -r mn av mx <<< "$p"
    repo=$DIR/repo cache=$DIR/cache
    rm -rf "$repo" "$cache"
    export XDG_CACHE_HOME=$cache
    if [[ -n $TEMPLATE && $p == "64K 256K 1M" ]]; then
      "$bin" --repo "$repo" init --copy-chunker-params-from "$TEMPLATE" >/dev/null
    else
      "$bin" --repo "$repo" init --stream-chunk-min "$mn" --stream-chunk-avg "$av" --stream-chunk-max "$mx" >/dev/null
    fi
    "$bin" --repo "$repo" --json backup --stdin --stdin-name db.sql < "$d1" > "$DIR/day1.json"
    s1=$(size "$repo")
    "$bin" --repo "$repo" --json backup --stdin --stdin-name db.sql < "$d2" | tail -n 1 > "$DIR/day2.json"
    s2=$(size "$repo")
    # Both days read back byte for byte (deltas decode), else the figures mean nothing.
    last=$("$bin" --repo "$repo" --json snapshots | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
    cmp -s <("$bin" --repo "$repo" cat "$last:/db.sql") "$d2" || { echo "$series $p: day 2 does not read back" >&2; exit 1; }
    raw=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["data_added"])' "$DIR/day2.json")
    chunks=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["data_blobs"])' "$DIR/day2.json")
    idx=$(size "$repo/index" $(find "$repo" "$cache" -name '*.redb'))
    packs=$(size "$repo/data")
    printf '%s\t'"$label"' %s/%s/%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$series" "$mn" "$av" "$mx" "$b1" "$b2" "$raw" \
      "$((s2 - s1))" "$chunks" "$idx" "$(python3 -c "print(f'{$idx/$packs:.4f}')")" >> "$OUT"
  done
  repo=$DIR/restic
  rm -rf "$repo"
  restic -q -r "$repo" init --repository-version 2 >/dev/null
  restic -q -r "$repo" --compression auto backup --stdin --stdin-filename db.sql < "$d1" >/dev/null
  s1=$(size "$repo")
  restic -q -r "$repo" --compression auto backup --stdin --stdin-filename db.sql < "$d2" >/dev/null
  s2=$(size "$repo")
  idx=$(size "$repo/index")
  printf '%s\trestic\t%s\t%s\t-\t%s\t-\t%s\t%s\n' "$series" "$b1" "$b2" "$((s2 - s1))" "$idx" \
    "$(python3 -c "print(f'{$idx/$(size "$repo/data"):.4f}')")" >> "$OUT"
  [[ ${ARC_SERIES_SIMULATE:-1} == 1 ]] && python3 "$HERE/dump_rows.py" "$d1" "$d2" 4096 16384 262144 | while IFS=$'\t' read -r opt raw n; do
    if [[ $opt == delta ]]; then
      printf '%s\tzstd --patch-from (delta floor)\t%s\t%s\t-\t%s\t-\t-\t-\n' "$series" "$b1" "$b2" "$raw" >> "$OUT"
    elif [[ $opt == delta-chunks:* ]]; then
      printf '%s\t%s (stored as deltas)\t%s\t%s\t-\t%s\t%s\t-\t-\n' "$series" "$opt" "$b1" "$b2" "$raw" "$n" >> "$OUT"
    else
      printf '%s\t%s\t%s\t%s\t%s\t-\t%s\t-\t-\n' "$series" "$opt" "$b1" "$b2" "$raw" "$n" >> "$OUT"
    fi
  done
done
rm -rf "$DIR/repo" "$DIR/cache" "$DIR/restic"
column -t -s $'\t' "$OUT"
