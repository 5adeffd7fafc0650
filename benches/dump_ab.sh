#!/usr/bin/env bash
# benches/run.sh's dump shape, day 2 and its restore, two arc binaries alternating on the
# same repositories (issue 11: BENCHMARKS.md "dumpspeed, session 13"). run.sh makes a new
# repository per run; this makes the day-1 and day-1+2 repositories once (with BIN_A) and
# then, ROUNDS times, restores a copy of the right one to the same path (so its index cache
# is found, as in run.sh's runs) and times on it, alternating A and B:
#   day2     `cat day2.sql | arc backup --stdin --stdin-name shop.sql` onto day 1
#   restore  `arc restore latest --target T` of day 1+2 into an empty tmpfs directory
#            (checked with cmp against day2.sql)
# for an encrypted repository (`arc`, the default `init`) and `--encryption none` (`none`).
#
#   benches/dump_ab.sh BIN_A BIN_B [ROUNDS]
#
# One line per run: step, mode, binary, wall s, user s, sys s, peak RSS KiB; then the
# medians. Env: ARC_BENCH_DIR [/var/tmp/arc-bench] (day1.sql and day2.sql in dump/, made
# by run.sh), W [$ARC_BENCH_DIR/dump-ab] (repositories; removed at the end), T
# [/dev/shm/arc-dump-ab] (restore target, a tmpfs), STEPS ["day2 restore"], MODES
# ["arc none"]. Wall time moves with the machine's load: run it at a high priority
# (`nice -n -19`) on a shared machine and compare the alternating runs.
set -euo pipefail
export LC_ALL=C
A=$1 B=$2 N=${3:-5}
BENCH_DIR=${ARC_BENCH_DIR:-/var/tmp/arc-bench}
D=$BENCH_DIR/dump
W=${W:-$BENCH_DIR/dump-ab}
T=${T:-/dev/shm/arc-dump-ab}
read -r -a STEPS <<<"${STEPS:-day2 restore}"
read -r -a MODES <<<"${MODES:-arc none}"
[[ -f $D/day1.sql && -f $D/day2.sql ]] || { echo "no $D/day1.sql, day2.sql: run benches/run.sh dump first" >&2; exit 2; }
export ARC_PASSWORD=arc-bench
rm -rf "$W" "$T"
mkdir -p "$W"
trap 'rm -rf "$W" "$T"' EXIT

# The templates: day 1, and day 1 + day 2, of each mode.
for m in "${MODES[@]}"; do
  R=$W/repo-$m C=$W/cache-$m
  init=(init)
  [[ $m == none ]] && init=(init --encryption none)
  XDG_CACHE_HOME=$C "$A" --repo "$R" "${init[@]}" >/dev/null
  XDG_CACHE_HOME=$C "$A" --repo "$R" backup --stdin --stdin-name shop.sql <"$D/day1.sql" >/dev/null
  mkdir -p "$W/tpl-$m-day2"; cp -a "$R" "$C" "$W/tpl-$m-day2/"
  XDG_CACHE_HOME=$C "$A" --repo "$R" backup --stdin --stdin-name shop.sql <"$D/day2.sql" >/dev/null
  mkdir -p "$W/tpl-$m-restore"; cp -a "$R" "$C" "$W/tpl-$m-restore/"
done

one() { # BIN MODE STEP
  local bin=$1 m=$2 step=$3 R=$W/repo-$2 C=$W/cache-$2 tf=$W/time
  rm -rf "$R" "$C" "$T"
  cp -a "$W/tpl-$m-$step/repo-$m" "$R"; cp -a "$W/tpl-$m-$step/cache-$m" "$C"
  tar -C "$W" -cf - "repo-$m" "cache-$m" | cat >/dev/null
  cat "$D/day2.sql" >/dev/null
  sync
  if [[ $step == day2 ]]; then
    # shellcheck disable=SC2002  # a pipe on purpose, as in run.sh
    cat "$D/day2.sql" | XDG_CACHE_HOME=$C /usr/bin/time -f "%e %U %S %M" -o "$tf" \
      "$bin" --repo "$R" backup --stdin --stdin-name shop.sql >/dev/null
  else
    mkdir -p "$T"
    XDG_CACHE_HOME=$C /usr/bin/time -f "%e %U %S %M" -o "$tf" "$bin" --repo "$R" restore latest --target "$T" >/dev/null
    cmp -s "$T/shop.sql" "$D/day2.sql" || { echo "restore of $m by $bin differs from day2.sql" >&2; exit 1; }
  fi
  echo "$step $m $4 $(tail -n 1 "$tf")"
}

echo "# load $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%FT%TZ)"
for step in "${STEPS[@]}"; do
  for m in "${MODES[@]}"; do
    for _ in $(seq "$N"); do
      one "$A" "$m" "$step" A
      one "$B" "$m" "$step" B
    done
  done
done | tee "$W/runs"
echo "# load $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%FT%TZ)"
# Medians of wall and of user + sys, per step, mode and binary.
awk '{ k = $1 " " $2 " " $3; w[k] = w[k] " " $4; c[k] = c[k] " " ($5 + $6) }
  END { for (k in w) print k, w[k], "|", c[k] }' "$W/runs" | sort | while read -r step m bin rest; do
  walls=${rest%%|*} cpus=${rest#*|}
  med() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
  printf '%-8s %-5s %s  wall %.2f s  cpu %.2f s  (runs: %s)\n' "$step" "$m" "$bin" \
    "$(echo "$walls" | med)" "$(echo "$cpus" | med)" "$(echo "$walls" | xargs)"
done
