#!/usr/bin/env bash
# What excludes and diff cost, on the spool workload (BENCHMARKS.md, "Excludes and diff"):
#   1. a first backup of the spool with a 2,000-line exclude file vs without (the patterns
#      match nothing in the spool, so both runs store the same data: the difference is
#      the cost of matching every entry against 2,000 patterns);
#   2. `arc diff` of the day-1 and day-2 snapshots vs a backup of the unchanged day-2 tree.
#
#   benches/select.sh
#
# Environment: ARC_BENCH_DIR [/var/tmp/arc-bench] (spool generated there by gen_workloads.py if
# missing), ARC_BENCH_RUNS [3] (runs per figure, median shown; with and without excludes
# alternate), ARC_BIN [./target/release/arc].
# The spool is copied into a work directory first: the day-2 mutation is applied to the copy,
# never to the shared workload.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BENCH_DIR=${ARC_BENCH_DIR:-/var/tmp/arc-bench}
RUNS=${ARC_BENCH_RUNS:-3}
ARC=${ARC_BIN:-$ROOT/target/release/arc}
[[ -x $ARC ]] || { echo "no arc binary at $ARC (cargo build --release)" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

python3 "$HERE/gen_workloads.py" "$BENCH_DIR" --shapes spool >/dev/null
WORK=$(mktemp -d "$BENCH_DIR/select.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
log "copying the spool into $WORK"
cp -a "$BENCH_DIR/spool" "$WORK/spool"
python3 - "$BENCH_DIR/manifest.json" "$WORK/manifest.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
json.dump({"shapes": {"spool": m["shapes"]["spool"]}}, open(sys.argv[2], "w"))
EOF
SEED=$(python3 -c "import json;print(json.load(open('$WORK/manifest.json'))['shapes']['spool']['seed'])")
SCALE=$(python3 -c "import json;print(json.load(open('$WORK/manifest.json'))['shapes']['spool']['scale'])")
GEN=(python3 "$HERE/gen_workloads.py" "$WORK" --seed "$SEED" --scale "$SCALE")
export XDG_CACHE_HOME=$WORK/cache

# 2,000 patterns of the kinds an operator writes: extensions, anchored directories, names
# at any depth, directory-only patterns, classes; with comments and blank lines.
EXCL=$WORK/www.exclude
{
  echo "# 2,000 patterns, none of which matches the spool"
  for i in $(seq 0 499); do
    echo "*.bak$i"
    echo "/srv/site$i/cache/"
    echo "**/node_modules$i/**"
    echo "sess_[0-9a-f]*$i.tmp"
    (( i % 50 == 0 )) && printf '\n# group %d\n' "$i"
  done
} > "$EXCL"
[[ $(grep -cv '^\(#\|$\)' "$EXCL") == 2000 ]] || { echo "exclude file is not 2,000 patterns" >&2; exit 1; }

secs() { # CMD...: runs it, prints its wall-clock seconds
  local t0 t1
  t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N)
  python3 -c "print(f'{$t1 - $t0:.2f}')"
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

load0=$(cut -d' ' -f1-3 /proc/loadavg)
plain=() excl=()
for run in $(seq "$RUNS"); do
  order=(plain excl)
  (( run % 2 == 0 )) && order=(excl plain)
  for v in "${order[@]}"; do
    rm -rf "$WORK/repo"; "$ARC" --repo "$WORK/repo" init >/dev/null
    if [[ $v == plain ]]; then
      s=$(secs "$ARC" --repo "$WORK/repo" -q backup "$WORK/spool"); plain+=("$s")
    else
      s=$(secs "$ARC" --repo "$WORK/repo" -q backup "$WORK/spool" --exclude-file "$EXCL"); excl+=("$s")
    fi
    log "run $run $v: ${s}s"
  done
done
n_excl=$("$ARC" --repo "$WORK/repo" --json snapshots | python3 -c "import json,sys;print(len(json.load(sys.stdin)[-1].get('excludes',[])))")

# diff vs an unchanged backup: repo with day 1, then day 2.
rm -rf "$WORK/repo"; "$ARC" --repo "$WORK/repo" init >/dev/null
"$ARC" --repo "$WORK/repo" -q backup "$WORK/spool" >/dev/null
"${GEN[@]}" --spool-day2 apply >/dev/null
"$ARC" --repo "$WORK/repo" -q backup "$WORK/spool" >/dev/null
ids=$("$ARC" --repo "$WORK/repo" --json snapshots | python3 -c "import json,sys;s=json.load(sys.stdin);print(s[0]['id'],s[1]['id'])")
read -r s1 s2 <<< "$ids"
changes=$("$ARC" --repo "$WORK/repo" --json diff "$s1" "$s2" | grep -c '"message_type":"change"')
trees=$("$ARC" --repo "$WORK/repo" --json diff "$s1" "$s2" | tail -1 | python3 -c "import json,sys;print(json.load(sys.stdin)['trees_read'])")
diffs=() nochange=()
for run in $(seq "$RUNS"); do
  diffs+=("$(secs "$ARC" --repo "$WORK/repo" --json diff "$s1" "$s2")")
  nochange+=("$(secs "$ARC" --repo "$WORK/repo" -q backup "$WORK/spool")")
  log "run $run: diff ${diffs[-1]}s, no-change backup ${nochange[-1]}s"
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

mp=$(median "${plain[@]}") me=$(median "${excl[@]}") md=$(median "${diffs[@]}") mn=$(median "${nochange[@]}")
cat <<EOF

Spool backup, first into an empty repository ($RUNS runs each, alternating, median; all runs: plain ${plain[*]} / excludes ${excl[*]}):

| backup | seconds | vs plain |
|---|---:|---:|
| plain | $mp | 1.00 |
| --exclude-file (2,000 patterns; $n_excl recorded in the snapshot) | $me | $(python3 -c "print(f'{$me/$mp:.2f}')") |

diff of the day-1 and day-2 snapshots ($changes changes, $trees trees read) vs a backup of the unchanged day-2 tree ($RUNS runs, median; all: diff ${diffs[*]} / backup ${nochange[*]}):

| operation | seconds |
|---|---:|
| arc diff day1 day2 --json | $md |
| arc backup (no change) | $mn |

load average before: $load0; after: $load1 ($(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); $("$ARC" --version))
EOF
