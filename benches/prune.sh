#!/usr/bin/env bash
# Prune benchmark: reclaiming the space of forgotten snapshots, arc vs restic vs borg.
#
#   benches/prune.sh
#
# Each tool gets a fresh repository holding 8 snapshots of a tree that slides over the
# generated spool and www workloads (see BENCHMARKS.md, "Prune"): the spool's 600
# mailboxes and www's 10 sites are dealt into 8 slices, and snapshot k holds slices k and
# k+1 (mod 8). Then the 4 oldest snapshots are forgotten and their space reclaimed, timed:
#
#   arc     arc --repo R forget --keep-last 4 --prune
#   restic  restic -r R forget --keep-last 4 --prune
#   borg    borg prune --keep-last 4 R && borg compact R
#
# The 4 kept snapshots hold slices 4-7 and 0; slices 1-3 are what forgetting frees.
# After the prune, the latest snapshot is restored and compared with the source (names,
# sizes, mtimes) and each tool's own check runs (both untimed).
#
# Environment (defaults in brackets), as for benches/run.sh:
#   ARC_BENCH_DIR    workloads and work area [/var/tmp/arc-bench]
#   ARC_BENCH_TOOLS  any of "arc restic borg" [arc restic borg]
#   ARC_BENCH_RUNS   runs; tables show the median [3]
#   ARC_BENCH_SCALE, ARC_BENCH_SEED  workload generation [1, 20241124]
#   ARC_BIN          arc binary [target/release/arc]; ARC_BENCH_SKIP_BUILD=1 skips cargo build
#
# Results: $ARC_BENCH_DIR/results-prune/<UTC time>/{raw.csv,summary.md,logs/}.
set -euo pipefail
echo -20 > /proc/self/autogroup 2>/dev/null || true
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BENCH_DIR=${ARC_BENCH_DIR:-/var/tmp/arc-bench}
read -r -a TOOLS <<< "${ARC_BENCH_TOOLS:-arc restic borg}"
RUNS=${ARC_BENCH_RUNS:-3}
SCALE=${ARC_BENCH_SCALE:-1}
SEED=${ARC_BENCH_SEED:-20241124}
ARC_BIN=${ARC_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/arc}
GEN=(python3 "$HERE/gen_workloads.py" "$BENCH_DIR" --seed "$SEED" --scale "$SCALE")
SLICES=8 KEEP=4

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
has_tool() { local t; for t in "${TOOLS[@]}"; do [[ $t == "$1" ]] && return 0; done; return 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "ARC_BENCH_RUNS must be a positive integer" >&2; exit 2; }
for t in "${TOOLS[@]}"; do
  case $t in arc|restic|borg) ;; *) echo "unknown tool '$t' (arc restic borg)" >&2; exit 2 ;; esac
done
[[ -x /usr/bin/time ]] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
if has_tool arc && [[ ${ARC_BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "cargo build --release"; (cd "$ROOT" && cargo build --release -p arc-cli)
fi
has_tool arc && { [[ -x $ARC_BIN ]] || { echo "arc binary not found at $ARC_BIN" >&2; exit 1; }; }

mkdir -p "$BENCH_DIR"
"${GEN[@]}" --shapes spool,www
"${GEN[@]}" --spool-day2 revert >/dev/null 2>&1 || true

RES=$BENCH_DIR/results-prune/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RES/logs"
WORK=$(mktemp -d "$BENCH_DIR/work-prune.XXXXXX")
SRC=$WORK/src
cleanup() { local rc=$?; rm -rf "$WORK"; [[ $rc == 0 ]] || log "aborted (exit $rc); partial results in $RES"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
export RESTIC_PASSWORD=arc-bench RESTIC_CACHE_DIR=$WORK/cache/restic XDG_CACHE_HOME=$WORK/cache/xdg
export BORG_BASE_DIR=$WORK/cache/borg BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

CSV=$RES/raw.csv
echo "tool,run,step,seconds,max_rss_kb,bytes,status" > "$CSV"
record() { local IFS=,; echo "$*" >> "$CSV"; }

# The slices: mailbox i and site i go to slice i mod 8.
mapfile -t USERS < <(find "$BENCH_DIR/spool" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort)
mapfile -t SITES < <(find "$BENCH_DIR/www" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort)
log "${#USERS[@]} mailboxes and ${#SITES[@]} sites in $SLICES slices"

# add_slice J / drop_slice J: hard links (cp -al) into $SRC, so that building a
# generation costs no copying and files that stay keep their inode and ctime.
add_slice() {
  local i
  mkdir -p "$SRC/spool" "$SRC/www"
  for i in "${!USERS[@]}"; do (( i % SLICES == $1 )) && cp -al "$BENCH_DIR/spool/${USERS[i]}" "$SRC/spool/"; done
  for i in "${!SITES[@]}"; do (( i % SLICES == $1 )) && cp -al "$BENCH_DIR/www/${SITES[i]}" "$SRC/www/"; done
  return 0
}
drop_slice() {
  local i
  for i in "${!USERS[@]}"; do (( i % SLICES == $1 )) && rm -rf "$SRC/spool/${USERS[i]}"; done
  for i in "${!SITES[@]}"; do (( i % SLICES == $1 )) && rm -rf "$SRC/www/${SITES[i]}"; done
  return 0
}

warm() { local p; for p in "$@"; do [[ -e $p ]] && tar -C "$p" -cf - . 2>/dev/null | cat >/dev/null; done; return 0; }
stored() { # repository bytes without arc's rebuildable index cache (restic's and borg's live outside)
  local total cache=0
  total=$(du -sb "$1" | cut -f1)
  [[ -f $1/index.redb ]] && cache=$(stat -c %s "$1/index.redb")
  echo $((total - cache))
}
tree_stats() { # DIR -> "FILES BYTES MD5(path size mtime)"
  local list
  list=$(cd "$1" && find . -type f -printf '%P\t%s\t%T@\n' | sort)
  printf '%s %s %s\n' "$(printf '%s\n' "$list" | grep -c . || true)" \
    "$(printf '%s\n' "$list" | awk -F'\t' '{ b += $2 } END { printf "%d", b }')" \
    "$(printf '%s\n' "$list" | md5sum | cut -d' ' -f1)"
}

# timed TOOL RUN STEP CMD...: wall seconds and peak RSS of CMD
timed() {
  local tool=$1 run=$2 name=$3; shift 3
  local logf=$RES/logs/$tool.$run.$name.log tv=$WORK/time.txt rc=0 t0 t1 secs rss
  printf '$ %s\n' "$*" > "$logf"
  sync
  t0=$EPOCHREALTIME
  /usr/bin/time -v -o "$tv" "$@" </dev/null >>"$logf" 2>&1 || rc=$?
  t1=$EPOCHREALTIME
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$tv" 2>/dev/null || echo 0)
  cat "$tv" >> "$logf" 2>/dev/null || true
  local status=ok; [[ $rc == 0 ]] || status=fail:$rc
  record "$tool" "$run" "$name" "$secs" "${rss:-0}" "" "$status"
  log "$(printf '%-6s run %d %-14s %8s s  rss %6s MB  %s' "$tool" "$run" "$name" "$secs" "$(( ${rss:-0} / 1024 ))" "$status")"
}

backup_cmd() { # TOOL REPO GEN -> CMD
  local t; t=$(printf '2024-01-%02d' $(( $3 + 1 )))
  case $1 in
    arc) CMD=("$ARC_BIN" --repo "$2" backup "$SRC" --time "${t}T00:00:00Z" --json) ;;
    restic) CMD=(restic -r "$2" --compression auto backup --host arc-bench --time "$t 00:00:00" "$SRC") ;;
    borg) CMD=(borg create --compression "zstd,3" --timestamp "${t}T00:00:00" "$2::gen$3" "$SRC") ;;
  esac
}

# shellcheck disable=SC2016  # expanded by the inner bash
BORG_PRUNE='borg prune --keep-last "$2" "$1" && borg compact "$1"'

for run in $(seq 1 "$RUNS"); do
  for tool in "${TOOLS[@]}"; do
    repo=$WORK/repo-$tool
    rm -rf "$repo" "$WORK/cache" "$SRC"
    case $tool in
      arc) "$ARC_BIN" --repo "$repo" init ;;
      restic) restic -r "$repo" init --repository-version 2 ;;
      borg) borg init --encryption none "$repo" ;;
    esac > "$RES/logs/$tool.$run.init.log" 2>&1
    add_slice 0; add_slice 1
    for g in $(seq 0 $(( SLICES - 1 ))); do
      if (( g > 0 )); then drop_slice $(( g - 1 )); add_slice $(( (g + 1) % SLICES )); fi
      backup_cmd "$tool" "$repo" "$g"
      timed "$tool" "$run" "backup$g" "${CMD[@]}"
    done
    before=$(stored "$repo"); record "$tool" "$run" stored_before 0 0 "$before" ok
    if [[ $tool == arc ]]; then
      # What the kept snapshots use (untimed; a dry run changes nothing).
      "$ARC_BIN" --repo "$repo" --json forget --keep-last $KEEP --prune --dry-run > "$RES/logs/arc.$run.dry-run.json"
      live=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["prune"]["live_stored_bytes"])' "$RES/logs/arc.$run.dry-run.json")
      record arc "$run" live_stored_after_forget 0 0 "$live" ok
    fi
    warm "$repo" "$WORK/cache"
    case $tool in
      arc) timed arc "$run" forget_prune "$ARC_BIN" --repo "$repo" forget --keep-last $KEEP --prune ;;
      restic) timed restic "$run" forget_prune restic -r "$repo" forget --keep-last $KEEP --prune ;;
      borg) timed borg "$run" forget_prune bash -c "$BORG_PRUNE" _ "$repo" $KEEP ;;
    esac
    after=$(stored "$repo"); record "$tool" "$run" stored_after 0 0 "$after" ok
    log "$tool run $run: repository $before -> $after bytes"
    # Untimed: the latest snapshot restores to the source, and the tool's check passes.
    rm -rf "$WORK/restore"; mkdir -p "$WORK/restore"
    case $tool in
      arc) "$ARC_BIN" --repo "$repo" restore latest --target "$WORK/restore" ;;
      restic) restic -r "$repo" restore latest --target "$WORK/restore" ;;
      borg) (cd "$WORK/restore" && borg extract "$repo::gen$(( SLICES - 1 ))") ;;
    esac > "$RES/logs/$tool.$run.restore.log" 2>&1 || true
    status=ok
    [[ $(tree_stats "$WORK/restore$SRC" 2>/dev/null) == "$(tree_stats "$SRC")" ]] || status=mismatch
    record "$tool" "$run" verify_restore 0 0 "" "$status"
    case $tool in
      arc) "$ARC_BIN" --repo "$repo" check ;;
      restic) restic -r "$repo" check ;;
      borg) borg check "$repo" ;;
    esac > "$RES/logs/$tool.$run.check.log" 2>&1 && status=ok || status=fail
    record "$tool" "$run" verify_check 0 0 "" "$status"
    log "$tool run $run: restore $(grep -c "^$tool,$run,verify_restore,.*,ok$" "$CSV") / check $status"
    rm -rf "$repo" "$WORK/cache" "$WORK/restore" "$SRC"
  done
done

python3 - "$CSV" "${TOOLS[@]}" > "$RES/summary.md" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
tools = sys.argv[2:]
def vals(tool, step, col):
    return [float(r[col]) for r in rows if r["tool"] == tool and r["step"] == step and r["status"] == "ok" and r[col]]
def med(tool, step, col):
    v = vals(tool, step, col)
    return statistics.median(v) if v else None
def fmt(x, unit):
    if x is None:
        return "–"
    return f"{x:.2f}" if unit == "s" else f"{x / 1e6:.1f}"
print("| | " + " | ".join(tools) + " |")
print("|---|" + "---|" * len(tools))
lines = [
    ("forget + prune, s", lambda t: fmt(med(t, "forget_prune", "seconds"), "s")),
    ("peak RSS, MB", lambda t: fmt((med(t, "forget_prune", "max_rss_kb") or 0) * 1024, "MB")),
    ("repository before, MB", lambda t: fmt(med(t, "stored_before", "bytes"), "MB")),
    ("repository after, MB", lambda t: fmt(med(t, "stored_after", "bytes"), "MB")),
    ("freed, MB", lambda t: fmt((med(t, "stored_before", "bytes") or 0) - (med(t, "stored_after", "bytes") or 0), "MB")),
    ("8 backups before it, s (sum)", lambda t: fmt(sum(med(t, f"backup{g}", "seconds") or 0 for g in range(8)), "s")),
]
for name, f in lines:
    print(f"| {name} | " + " | ".join(f(t) for t in tools) + " |")
live = med("arc", "live_stored_after_forget", "bytes")
if live:
    print(f"\nLive data of the 4 kept snapshots (arc, `forget --dry-run --prune`, live_stored_bytes): {live / 1e6:.1f} MB")
for t in tools:
    ok = sum(1 for r in rows if r["tool"] == t and r["step"] == "verify_restore" and r["status"] == "ok")
    chk = sum(1 for r in rows if r["tool"] == t and r["step"] == "verify_check" and r["status"] == "ok")
    n = sum(1 for r in rows if r["tool"] == t and r["step"] == "verify_restore")
    print(f"{t}: restore of the latest snapshot {ok}/{n} ok, check {chk}/{n} ok")
EOF
cat "$RES/summary.md"
log "results in $RES"
