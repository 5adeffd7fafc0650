#!/usr/bin/env bash
# CPU seconds (user+sys) of a day-2 `arc backup --stdin` of a dump series, two arc binaries
# side by side (issue 16, stream deltas: what pairing and cutting cost the writer).
#
#   benches/dump_day2_cpu.sh BIN_A BIN_B TEMPLATE DAY1 DAY2 [ROUNDS]
#
# For each binary, a repository made with `init --copy-chunker-params-from TEMPLATE` (the same
# content keys, so both cut alike) holds DAY1; then ROUNDS times (default 3), alternating A and
# B, a copy of that repository and its cache backs up DAY2 under /usr/bin/time. Prints CPU,
# wall time, the bytes day 2 added and the load. The machine's load changes wall time, less
# CPU time: compare the alternating rounds. Work files go to a temporary directory in
# ${TMPDIR:-/var/tmp}, removed at the end.
set -euo pipefail
A=$1 B=$2 T=$3 D1=$4 D2=$5 N=${6:-3}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/arc-day2-cpu.XXXX")
trap 'rm -rf "$W"' EXIT
export ARC_PASSWORD=dump-series
# Each repository is made at the path the rounds use ($W/run/repo) and moved aside: the cache
# is keyed by the repository's canonical path as well as its id, and a copy under another path
# would rebuild its index cache in every timed round.
for L in A B; do
  bin=${!L}
  rm -rf "$W/run"; mkdir "$W/run"
  XDG_CACHE_HOME=$W/run/cache "$bin" --repo "$W/run/repo" init --copy-chunker-params-from "$T" >/dev/null
  XDG_CACHE_HOME=$W/run/cache "$bin" --repo "$W/run/repo" backup --stdin --stdin-name db.sql < "$D1" >/dev/null
  mv "$W/run/repo" "$W/repo$L"; mv "$W/run/cache" "$W/cache$L"
done
for i in $(seq "$N"); do
  for L in A B; do
    bin=${!L}
    rm -rf "$W/run"; mkdir "$W/run"; cp -a "$W/repo$L" "$W/run/repo"; cp -a "$W/cache$L" "$W/run/cache"
    s1=$(du -sb "$W/run/repo" | cut -f1)
    /usr/bin/time -f "%U %S %e" -o "$W/t" env XDG_CACHE_HOME="$W/run/cache" \
      "$bin" --repo "$W/run/repo" backup --stdin --stdin-name db.sql < "$D2" >/dev/null
    s2=$(du -sb "$W/run/repo" | cut -f1)
    read -r u s e < "$W/t"
    echo "$L round $i: cpu $(python3 -c "print(round($u + $s, 2))") s (user $u sys $s wall $e)" \
      "day 2 adds $((s2 - s1)) bytes, load $(cut -d' ' -f1 /proc/loadavg)"
  done
done
