#!/usr/bin/env bash
# What excludes and diff cost, on the spool workload (BENCHMARKS.md, "Excludes and diff"):
#   1. a backup of the spool with a 2,000-line exclude file vs without (the patterns match
#      nothing in the spool, so both runs store the same data: the difference is the cost
#      of matching every entry against 2,000 patterns), as a no-change backup (all walk:
#      where matching weighs most) and as a first backup into an empty repository;
#   2. `arc diff` of the day-1 and day-2 snapshots vs a backup of the unchanged day-2 tree.
#
#   benches/select.sh
#
# Environment: ARC_BENCH_DIR [/var/tmp/arc-bench] (spool generated there by gen_workloads.py if
# missing), ARC_BENCH_RUNS [3] (runs per figure, median shown; with and without excludes
# alternate), ARC_BENCH_FIRST [1] (0: skip the first-backup rows), ARC_BIN [./target/release/arc].
# Wall and CPU (user + system) seconds are both recorded: CPU time is far less disturbed by a
# machine shared with other work.
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

secs() { # CMD...: runs it, prints "wall/cpu" seconds (cpu = user + system)
  local e u s
  /usr/bin/time -f '%e %U %S' -o "$WORK/time" "$@" >/dev/null 2>&1
  read -r e u s < "$WORK/time"
  python3 -c "print(f'{$e:.2f}/{$u + $s:.2f}')"
}
med() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
wall() { local x; for x in "$@"; do echo "${x%/*}"; done | med; }
cpu() { local x; for x in "$@"; do echo "${x#*/}"; done | med; }
row() { # LABEL BASE_WALL BASE_CPU RESULTS...
  local label=$1 bw=$2 bc=$3; shift 3
  local w c; w=$(wall "$@"); c=$(cpu "$@")
  echo "| $label | $w | $c | $(python3 -c "print(f'{$w/$bw:.2f}')") | $(python3 -c "print(f'{$c/$bc:.2f}')") |"
}

load0=$(cut -d' ' -f1-3 /proc/loadavg)
plain=() excl=()
if [[ ${ARC_BENCH_FIRST:-1} == 1 ]]; then
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
      log "first backup, run $run $v: $s (wall/cpu s)"
    done
  done
fi

# No-change backups (all walk and metadata, where matching weighs most): one repository
# holding a backup of the spool, then plain and with excludes alternating.
rm -rf "$WORK/repo"; "$ARC" --repo "$WORK/repo" init >/dev/null
"$ARC" --repo "$WORK/repo" -q backup "$WORK/spool" >/dev/null
nc_plain=() nc_excl=()
for run in $(seq "$RUNS"); do
  nc_plain+=("$(secs "$ARC" --repo "$WORK/repo" -q backup "$WORK/spool")")
  nc_excl+=("$(secs "$ARC" --repo "$WORK/repo" -q backup "$WORK/spool" --exclude-file "$EXCL")")
  log "no-change, run $run: plain ${nc_plain[-1]}, excludes ${nc_excl[-1]} (wall/cpu s)"
done
n_excl=$("$ARC" --repo "$WORK/repo" --json snapshots | python3 -c "import json,sys;print(len(json.load(sys.stdin)[-1].get('excludes',[])))")

# diff vs a no-change backup: a repository with day 1, then day 2.
rm -rf "$WORK/repo"; "$ARC" --repo "$WORK/repo" init >/dev/null
"$ARC" --repo "$WORK/repo" -q backup "$WORK/spool" >/dev/null
"${GEN[@]}" --spool-day2 apply >/dev/null
"$ARC" --repo "$WORK/repo" -q backup "$WORK/spool" >/dev/null
read -r s1 s2 < <("$ARC" --repo "$WORK/repo" --json snapshots | python3 -c "import json,sys;s=json.load(sys.stdin);print(s[0]['id'],s[1]['id'])")
"$ARC" --repo "$WORK/repo" --json diff "$s1" "$s2" > "$WORK/diff.json"
changes=$(grep -c '"message_type":"change"' "$WORK/diff.json")
trees=$(tail -1 "$WORK/diff.json" | python3 -c "import json,sys;print(json.load(sys.stdin)['trees_read'])")
diffs=() nochange=()
for run in $(seq "$RUNS"); do
  diffs+=("$(secs "$ARC" --repo "$WORK/repo" --json diff "$s1" "$s2")")
  nochange+=("$(secs "$ARC" --repo "$WORK/repo" -q backup "$WORK/spool")")
  log "diff, run $run: diff ${diffs[-1]}, no-change backup ${nochange[-1]} (wall/cpu s)"
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

pw=$(wall "${nc_plain[@]}") pc=$(cpu "${nc_plain[@]}")
echo
echo "Spool backup with and without a 2,000-pattern exclude file ($n_excl rules recorded in the snapshot);"
echo "$RUNS runs each, alternating, median. All runs (wall/cpu s): no-change plain ${nc_plain[*]}; no-change excludes ${nc_excl[*]}; first plain ${plain[*]:-}; first excludes ${excl[*]:-}."
echo
echo "| backup | wall s | cpu s | wall vs plain | cpu vs plain |"
echo "|---|---:|---:|---:|---:|"
row "no change, plain" "$pw" "$pc" "${nc_plain[@]}"
row "no change, --exclude-file (2,000 patterns)" "$pw" "$pc" "${nc_excl[@]}"
if [[ ${#plain[@]} -gt 0 ]]; then
  fw=$(wall "${plain[@]}") fc=$(cpu "${plain[@]}")
  row "first backup, plain" "$fw" "$fc" "${plain[@]}"
  row "first backup, --exclude-file (2,000 patterns)" "$fw" "$fc" "${excl[@]}"
fi
dw=$(wall "${nochange[@]}") dc=$(cpu "${nochange[@]}")
echo
echo "diff of the day-1 and day-2 spool snapshots ($changes changes, $trees trees read) vs a backup of the unchanged"
echo "day-2 tree; $RUNS runs, median. All runs (wall/cpu s): diff ${diffs[*]}; backup ${nochange[*]}."
echo
echo "| operation | wall s | cpu s | wall vs backup | cpu vs backup |"
echo "|---|---:|---:|---:|---:|"
row "arc diff day1 day2 --json" "$dw" "$dc" "${diffs[@]}"
row "arc backup (no change)" "$dw" "$dc" "${nochange[@]}"
echo
echo "load average before: $load0; after: $load1 ($(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); $("$ARC" --version))"
