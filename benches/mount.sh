#!/usr/bin/env bash
# arc mount against arc restore and restic mount, on the benches/run.sh workloads.
#
#   benches/mount.sh
#
# Measured, each on a fresh mount (empty kernel and arc caches; repository files warm in
# the page cache, as in run.sh):
#   large files   dump/day1.sql (292 MiB of SQL, compressible) and a random file
#                 (1 GiB, incompressible): `cat` through arc mount, `cp` through arc mount
#                 into a tmpfs, `arc restore --include FILE` into a tmpfs, `cat` through
#                 restic mount
#   parallel      both large files read at once through one arc mount
#   tree walks    `find MNT/latest/ | wc -l` and `ls -lR MNT/latest/` over the spool
#                 snapshot (200k files), arc mount vs restic mount; peak RSS of the mount
#   copy-out      whole snapshots of the spool, www and system shapes (system: a copy of
#                 this machine's /usr/share and /etc, made on first use) copied out:
#                 `arc restore` into a tmpfs against `cp -a`, `rsync -aHAX` and
#                 `tar -cf - . | cat` through arc mount, and `cp -a` straight from the
#                 source directory (what the copy tool itself costs); then 4 www sites
#                 copied with `cp -a` at once and one after the other. Page cache dropped
#                 (sync; drop_caches) before every step, restore included. Every copy is
#                 checked against the source (names, types, sizes, modes, owners, mtimes,
#                 link counts); kernel requests per file from `arc mount --count-requests`.
#
# Environment (defaults in brackets):
#   ARC_BENCH_DIR              workloads and results [/var/tmp/arc-bench]
#   ARC_BENCH_RUNS             runs per figure; the summary shows the median [3]
#   ARC_BENCH_MOUNT_RANDOM_MIB size of the random file [1024]
#   ARC_BIN                    arc binary [target/release/arc]
#   ARC_BENCH_SKIP_BUILD       1: do not run cargo build [0]
#   ARC_BENCH_MOUNT_PARTS      which parts to run: files (large files, parallel), walks, copy
#                              [files walks copy]
#   ARC_BENCH_MOUNT_BUSY       1: keep one nice-19 busy loop running throughout, so that
#                              vCPUs do not halt between FUSE round trips (see BENCHMARKS.md) [0]
#
# Results: $ARC_BENCH_DIR/results/mount-<UTC time>/{raw.csv,summary.md,meta.txt,logs/}
set -euo pipefail
echo -20 > /proc/self/autogroup 2>/dev/null || true   # outrank background builds, as run.sh
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BENCH_DIR=${ARC_BENCH_DIR:-/var/tmp/arc-bench}
RUNS=${ARC_BENCH_RUNS:-3}
RANDOM_MIB=${ARC_BENCH_MOUNT_RANDOM_MIB:-1024}
BUSY=${ARC_BENCH_MOUNT_BUSY:-0}
PARTS=${ARC_BENCH_MOUNT_PARTS:-files walks copy}
part() { [[ " $PARTS " == *" $1 "* ]]; }
ARC_BIN=${ARC_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/arc}
GEN=(python3 "$HERE/gen_workloads.py" "$BENCH_DIR")

[[ $(id -u) == 0 ]] || { echo "run as root (FUSE, tmpfs)" >&2; exit 2; }
[[ -e /dev/fuse ]] || { echo "/dev/fuse is missing" >&2; exit 2; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

pkgs=()
command -v restic >/dev/null || pkgs+=(restic)
command -v fusermount3 >/dev/null || pkgs+=(fuse3)
[[ -x /usr/bin/time ]] || pkgs+=(time)
command -v rsync >/dev/null || pkgs+=(rsync)
if [[ ${#pkgs[@]} -gt 0 ]]; then
  log "apt-get install ${pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >/dev/null
fi
if [[ ${ARC_BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release -q)
fi

# ---- workloads ---------------------------------------------------------------------------
mkdir -p "$BENCH_DIR"
"${GEN[@]}" --shapes spool,dump
if part copy; then "${GEN[@]}" --shapes www; fi
"${GEN[@]}" --spool-day2 revert >/dev/null 2>&1 || true
SPOOL=$BENCH_DIR/spool
SQL=$BENCH_DIR/dump/day1.sql
RND=$BENCH_DIR/mountbench/random-${RANDOM_MIB}m.bin
if [[ ! -f $RND ]]; then
  log "generating $RND"
  mkdir -p "$(dirname "$RND")"
  python3 - "$RND" "$RANDOM_MIB" <<'PY'
import random, sys
r = random.Random(20241124)
with open(sys.argv[1] + ".tmp", "wb") as f:
    for _ in range(int(sys.argv[2])):
        f.write(r.randbytes(1 << 20))
import os
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
PY
fi

# The same copy as benches/run.sh's system shape (benches/system_copy.sh).
SYSTEM=$BENCH_DIR/system
if part copy; then "$HERE/system_copy.sh" "$SYSTEM"; fi

# ---- work area, cleanup --------------------------------------------------------------------
RES=$BENCH_DIR/results/mount-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RES/logs"
WORK=$(mktemp -d "$BENCH_DIR/mount-work.XXXXXX")
MNT=$WORK/mnt T=$WORK/tmpfs
mkdir -p "$MNT" "$T"
MOUNT_PID='' BUSY_PID=''
cleanup() {
  local rc=$?
  set +e
  if [[ -n $BUSY_PID ]]; then kill "$BUSY_PID"; fi
  if [[ -n $MOUNT_PID ]]; then stop_mount; fi
  while mountpoint -q "$MNT"; do fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT"; done
  while mountpoint -q "$T"; do umount "$T"; done
  rm -rf "$WORK"
  [[ $rc == 0 ]] || log "aborted (exit $rc); partial results in $RES"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
export ARC_PASSWORD=arc-bench RESTIC_PASSWORD=arc-bench RESTIC_CACHE_DIR=$WORK/cache/restic XDG_CACHE_HOME=$WORK/cache/xdg

CSV=$RES/raw.csv
echo "run,tool,step,seconds,bytes,files,rss_kb,status" > "$CSV"
{
  echo "started_utc: $(date -u +%FT%TZ)  host: $(hostname)  cpus: $(nproc)  kernel: $(uname -r)"
  echo "loadavg_start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "arc: $("$ARC_BIN" --version) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo +dirty))"
  echo "restic: $(restic version | head -1)"
  echo "command: ARC_BENCH_RUNS=$RUNS ARC_BENCH_MOUNT_RANDOM_MIB=$RANDOM_MIB ARC_BENCH_MOUNT_BUSY=$BUSY ARC_BENCH_MOUNT_PARTS='$PARTS' benches/mount.sh"
} > "$RES/meta.txt"

warm() { find "$@" -type f -exec cat {} + >/dev/null 2>&1 || true; }

# timed RUN TOOL STEP BYTES FILES CMD...: sync, run, record wall seconds
timed() {
  local run=$1 tool=$2 step=$3 bytes=$4 files=$5; shift 5
  local t0 t1 rc=0 logf=$RES/logs/$tool.$step.$run.log
  printf '$ %s\n' "$*" > "$logf"
  sync
  t0=$EPOCHREALTIME
  "$@" >>"$logf" 2>&1 || rc=$?
  t1=$EPOCHREALTIME
  STEP_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  local status=ok
  [[ $rc == 0 ]] || status=fail:$rc
  echo "$run,$tool,$step,$STEP_SECS,$bytes,$files,,$status" >> "$CSV"
  log "$(printf 'run %d %-6s %-22s %8s s  %s' "$run" "$tool" "$step" "$STEP_SECS" "$status")"
}

# ---- mounting --------------------------------------------------------------------------------
start_mount() { # TOOL REPO NAME [ARC MOUNT OPTIONS...]
  local tool=$1 repo=$2 name=$3 ready
  shift 3
  if [[ $tool == arc ]]; then
    /usr/bin/time -v -o "$WORK/mount-time.txt" "$ARC_BIN" --repo "$repo" mount --utc "$@" "$MNT" \
      > "$RES/logs/arc.$name.mount.log" 2>&1 &
    ready=$MNT/latest
  else
    /usr/bin/time -v -o "$WORK/mount-time.txt" restic -r "$repo" mount "$MNT" \
      > "$RES/logs/restic.$name.mount.log" 2>&1 &
    ready=$MNT/snapshots/latest
  fi
  MOUNT_PID=$!
  local _
  for _ in $(seq 600); do
    [[ -e $ready ]] && return 0
    kill -0 "$MOUNT_PID" 2>/dev/null || { log "$tool mount exited early"; MOUNT_PID=; return 1; }
    sleep 0.1
  done
  log "$tool mount did not come up"; return 1
}

stop_mount() { # sets MOUNT_RSS_KB
  local child
  # /usr/bin/time does not pass signals on: stop the mount process itself (its pid is
  # the only child of ours); both tools unmount on SIGINT.
  child=$(pgrep -P "$MOUNT_PID" || true)
  [[ -n $child ]] && kill -INT "$child" 2>/dev/null
  wait "$MOUNT_PID" 2>/dev/null || true
  MOUNT_PID=
  while mountpoint -q "$MNT"; do fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT"; done
  MOUNT_RSS_KB=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/mount-time.txt" 2>/dev/null || echo 0)
}

record_rss() { # RUN TOOL STEP
  echo "$1,$2,$3_rss,0,,,${MOUNT_RSS_KB:-0},ok" >> "$CSV"
}

fresh_tmpfs() { # [SIZE_MIB]
  while mountpoint -q "$T"; do umount "$T"; done
  mount -t tmpfs -o size=$(( ${1:-$((RANDOM_MIB + 1024))} * 1024 * 1024 )) arc-bench-mount "$T"
}

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# What a copy must reproduce, one line per entry below DIR: type, path, size (files),
# mode, owner, mtime, link count (files). Printed as a checksum.
manifest() {
  (cd "$1" && find . \( -type f -printf '%y %p %s %m %U:%G %T@ %n\n' \) -o -printf '%y %p %m %U:%G %T@\n' | sort | md5sum)
}

# verify RUN SHAPE STEP DIR: DIR must match the source's manifest.
verify() {
  if [[ $(manifest "$4") != "${MANIFEST[$2]}" ]]; then
    log "VERIFY: $2 $3 (run $1) differs from the source"
    echo "$1,arc,$2.$3.verify,0,,,,fail" >> "$CSV"
  fi
}

# record_requests RUN STEP FILES: kernel requests per file, from the mount's exit line.
record_requests() {
  local n
  n=$(grep -o 'kernel requests: [0-9]*' "$RES/logs/arc.$2-$1.mount.log" | grep -o '[0-9]*$' || true)
  [[ -n $n ]] && echo "$1,arc,$2_requests,$n,,$3,,ok" >> "$CSV"
  grep -o 'kernel requests: .*' "$RES/logs/arc.$2-$1.mount.log" > "$RES/logs/arc.$2-$1.requests.txt" || true
}

# ---- repositories ------------------------------------------------------------------------------
log "building repositories"
A_FILES=$WORK/arc-files A_SPOOL=$WORK/arc-spool R_FILES=$WORK/restic-files R_SPOOL=$WORK/restic-spool
if part files; then
  "$ARC_BIN" --repo "$A_FILES" init >/dev/null
  "$ARC_BIN" --repo "$A_FILES" backup -q "$SQL" "$RND" >/dev/null
  restic -r "$R_FILES" init -q --repository-version 2 >/dev/null
  restic -r "$R_FILES" -q --compression auto backup --host arc-bench "$SQL" "$RND" >/dev/null
fi
if part walks; then
  "$ARC_BIN" --repo "$A_SPOOL" init >/dev/null
  "$ARC_BIN" --repo "$A_SPOOL" backup -q "$SPOOL" >/dev/null
  restic -r "$R_SPOOL" init -q --repository-version 2 >/dev/null
  restic -r "$R_SPOOL" -q --compression auto backup --host arc-bench "$SPOOL" >/dev/null
fi

declare -A COPY_SRC=([spool]=$SPOOL [www]=$BENCH_DIR/www [system]=$SYSTEM) COPY_FILES=() MANIFEST=()
COPY_SHAPES=(spool www system)
if part copy; then
  for shape in "${COPY_SHAPES[@]}"; do
    "$ARC_BIN" --repo "$WORK/arc-copy-$shape" init >/dev/null
    "$ARC_BIN" --repo "$WORK/arc-copy-$shape" backup -q "${COPY_SRC[$shape]}" >/dev/null
    COPY_FILES[$shape]=$(find "${COPY_SRC[$shape]}" | wc -l)
    MANIFEST[$shape]=$(manifest "${COPY_SRC[$shape]}")
  done
fi

SQL_BYTES=$(stat -c %s "$SQL") RND_BYTES=$(stat -c %s "$RND")
if [[ $BUSY == 1 ]]; then
  nice -n 19 sh -c 'while :; do :; done' &
  BUSY_PID=$!
  log "busy loop running (pid $BUSY_PID)"
fi
SPOOL_FILES=$(find "$SPOOL" | wc -l)

for run in $(seq 1 "$RUNS"); do
  for f in sql rnd; do
    part files || continue
    if [[ $f == sql ]]; then file=$SQL bytes=$SQL_BYTES; else file=$RND bytes=$RND_BYTES; fi
    rel=${file#/}

    warm "$A_FILES"; start_mount arc "$A_FILES" "$f-cat-$run"
    # shellcheck disable=SC2016
    timed "$run" arc "$f.mount_cat" "$bytes" 1 bash -c 'cat "$1" >/dev/null' _ "$MNT/latest/$rel"
    stop_mount

    fresh_tmpfs; warm "$A_FILES"; start_mount arc "$A_FILES" "$f-cp-$run"
    timed "$run" arc "$f.mount_cp" "$bytes" 1 cp "$MNT/latest/$rel" "$T/"
    stop_mount

    fresh_tmpfs; warm "$A_FILES"
    timed "$run" arc "$f.restore" "$bytes" 1 "$ARC_BIN" --repo "$A_FILES" restore -q latest --target "$T/r" --include "$file"
    cmp -s "$file" "$T/r/$rel" || log "VERIFY: restored $f differs"
    umount "$T"

    warm "$R_FILES" "$RESTIC_CACHE_DIR"; start_mount restic "$R_FILES" "$f-cat-$run"
    # shellcheck disable=SC2016
    timed "$run" restic "$f.mount_cat" "$bytes" 1 bash -c 'cat "$1" >/dev/null' _ "$MNT/snapshots/latest/$rel"
    stop_mount
  done

  # Both files at once through one mount; compare with the single-reader times above.
  if part files; then
    warm "$A_FILES"; start_mount arc "$A_FILES" "parallel-$run"
    # shellcheck disable=SC2016
    timed "$run" arc both.mount_cat_parallel $(( SQL_BYTES + RND_BYTES )) 2 \
      bash -c 'cat "$1" >/dev/null & cat "$2" >/dev/null & wait' _ "$MNT/latest/${SQL#/}" "$MNT/latest/${RND#/}"
    stop_mount
  fi

  for tool in arc restic; do
    part walks || continue
    if [[ $tool == arc ]]; then repo=$A_SPOOL top=$MNT/latest; else repo=$R_SPOOL top=$MNT/snapshots/latest; fi
    warm "$repo" "$RESTIC_CACHE_DIR"; start_mount "$tool" "$repo" "find-$run"
    # shellcheck disable=SC2016
    timed "$run" "$tool" spool.find "" "$SPOOL_FILES" bash -c 'find "$1/" | wc -l' _ "$top"
    stop_mount; record_rss "$run" "$tool" spool.find
    warm "$repo" "$RESTIC_CACHE_DIR"; start_mount "$tool" "$repo" "ls-$run"
    # shellcheck disable=SC2016
    timed "$run" "$tool" spool.ls_lR "" "$SPOOL_FILES" bash -c 'ls -lR "$1/" | wc -l' _ "$top"
    stop_mount; record_rss "$run" "$tool" spool.ls_lR
  done

  # Whole snapshots copied out: restore against copies through the mount.
  for shape in "${COPY_SHAPES[@]}"; do
    part copy || continue
    repo=$WORK/arc-copy-$shape src=${COPY_SRC[$shape]} files=${COPY_FILES[$shape]}
    rel=${src#/} sz=8192

    fresh_tmpfs $sz; drop_caches
    timed "$run" arc "$shape.restore" "" "$files" "$ARC_BIN" --repo "$repo" restore -q latest --target "$T/r"
    verify "$run" "$shape" restore "$T/r/$rel"

    fresh_tmpfs $sz; drop_caches
    timed "$run" local "$shape.local_cp" "" "$files" cp -a "$src" "$T/"
    verify "$run" "$shape" local_cp "$T/$(basename "$src")"

    for step in cp rsync tar; do
      fresh_tmpfs $sz; drop_caches
      start_mount arc "$repo" "$shape.mount_$step-$run" --count-requests
      case $step in
        cp) timed "$run" arc "$shape.mount_cp" "" "$files" cp -a "$MNT/latest/$rel" "$T/" ;;
        rsync) timed "$run" arc "$shape.mount_rsync" "" "$files" rsync -aHAX "$MNT/latest/$rel/" "$T/rs/" ;;
        # shellcheck disable=SC2016
        tar) timed "$run" arc "$shape.mount_tar" "" "$files" bash -c 'cd "$1" && tar -cf - . | cat >/dev/null' _ "$MNT/latest/$rel" ;;
      esac
      stop_mount
      record_requests "$run" "$shape.mount_$step" "$files"
      case $step in
        cp) verify "$run" "$shape" mount_cp "$T/$(basename "$src")" ;;
        rsync) verify "$run" "$shape" mount_rsync "$T/rs" ;;
      esac
    done
  done

  # Four readers at once: four www sites copied in parallel, against one after the other.
  if part copy; then
    mapfile -t SITES < <(find "${COPY_SRC[www]}" -mindepth 1 -maxdepth 1 -type d | sort | head -4)
    SITES=("${SITES[@]/#\//$MNT/latest/}")
    for mode in sequential parallel; do
      fresh_tmpfs 8192; drop_caches
      start_mount arc "$WORK/arc-copy-www" "www.copy4_$mode-$run"
      # shellcheck disable=SC2016
      if [[ $mode == sequential ]]; then
        timed "$run" arc "www.copy4_$mode" "" 4 bash -c 'for s; do cp -a "$s" "'"$T"'/"; done' _ "${SITES[@]}"
      else
        timed "$run" arc "www.copy4_$mode" "" 4 bash -c 'for s; do cp -a "$s" "'"$T"'/" & done; wait' _ "${SITES[@]}"
      fi
      stop_mount
    done
  fi
done
echo "loadavg_end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$RES/meta.txt"

# ---- summary -------------------------------------------------------------------------------------
python3 - "$CSV" "$RES/meta.txt" > "$RES/summary.md" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def med(tool, step, field="seconds"):
    v = [float(r[field]) for r in rows if r["tool"] == tool and r["step"] == step and r["status"] == "ok" and r[field]]
    return statistics.median(v) if v else None
def size(step):
    for r in rows:
        if r["step"] == step and r["bytes"]:
            return int(r["bytes"])
def fmt(x, unit="s"):
    return "–" if x is None else f"{x:.2f} {unit}"
def rate(step, tool):
    s, b = med(tool, step), size(step)
    return None if not s or not b else b / s / 1e6
print(open(sys.argv[2]).read().strip().replace("\n", "  \n"))
print()
print(f"Median of {max(int(r['run']) for r in rows)} runs. Each measurement on a fresh mount.")
print()
files = [(f, label) for f, label in (("sql", "day1.sql (SQL, compressible)"), ("rnd", "random (incompressible)"))
         if size(f + ".mount_cat")]  # absent when only the walks part ran
if files:
    print("| large file | arc mount, cat | arc mount, cp to tmpfs | arc restore to tmpfs | restic mount, cat | mount throughput ÷ restore (cat; cp) | arc ÷ restic (cat) |")
    print("|---|---|---|---|---|---|---|")
for f, label in files:
    cells = []
    for tool, step in (("arc", "mount_cat"), ("arc", "mount_cp"), ("arc", "restore"), ("restic", "mount_cat")):
        s, r = med(tool, f"{f}.{step}"), rate(f"{f}.{step}", tool)
        cells.append("–" if s is None else f"{s:.2f} s ({r:.0f} MB/s)")
    a, rs, rc = med("arc", f"{f}.mount_cp"), med("arc", f"{f}.restore"), med("restic", f"{f}.mount_cat")
    ac = med("arc", f"{f}.mount_cat")
    ratio1 = "–" if not a or not rs or not ac else f"{rs / ac:.2f}; {rs / a:.2f}"
    ratio2 = "–" if not ac or not rc else f"{rc / ac:.1f}x"
    print(f"| {label} ({size(f + '.mount_cat') / 2**20:.0f} MiB) | " + " | ".join(cells) + f" | {ratio1} | {ratio2} |")
par, s1, s2 = med("arc", "both.mount_cat_parallel"), med("arc", "sql.mount_cat"), med("arc", "rnd.mount_cat")
if par and s1 and s2:
    print()
    print(f"Both files at once through one arc mount: {par:.2f} s (one after the other: {s1 + s2:.2f} s).")
def walks():
    print()
    print("| spool snapshot (200k files) | arc mount | restic mount | restic ÷ arc |")
    print("|---|---|---|---|")
    for step, label in (("spool.find", "`find MNT/latest/ \\| wc -l`"), ("spool.ls_lR", "`ls -lR MNT/latest/`")):
        a, r = med("arc", step), med("restic", step)
        ratio = "–" if not a or not r else f"{r / a:.1f}x"
        print(f"| {label} | {fmt(a)} | {fmt(r)} | {ratio} |")
    for step in ("spool.find_rss", "spool.ls_lR_rss"):
        a, r = med("arc", step, "rss_kb"), med("restic", step, "rss_kb")
        label = step.replace("_rss", "").replace("spool.", "")
        print(f"| peak RSS of the mount process ({label}) | {fmt(a and a / 1024, 'MB')} | {fmt(r and r / 1024, 'MB')} | {'–' if not a or not r else f'{r / a:.1f}x'} |")
if any(r["step"] == "spool.find" for r in rows):
    walks()

shapes = [s for s in ("spool", "www", "system") if med("arc", s + ".restore") is not None]
if shapes:
    def files(shape):
        for r in rows:
            if r["step"] == shape + ".restore" and r["files"]:
                return int(r["files"])
    def per_file(shape, step):
        n, f = med("arc", f"{shape}.mount_{step}_requests"), files(shape)
        return "–" if n is None or not f else f"{n / f:.1f}"
    def cell(shape, step, tool="arc"):
        s, r = med(tool, f"{shape}.{step}"), med("arc", f"{shape}.restore")
        return "–" if s is None else f"{s:.2f} s ({s / r:.1f}x)"
    print()
    print("| snapshot copied out | arc restore | cp -a through mount | rsync -aHAX through mount | tar -cf - . \\| cat through mount | cp -a from the source directory | requests per entry: cp; rsync; tar |")
    print("|---|---|---|---|---|---|---|")
    for shape in shapes:
        print(f"| {shape} ({files(shape)} entries) | {fmt(med('arc', shape + '.restore'))} | {cell(shape, 'mount_cp')} | "
              f"{cell(shape, 'mount_rsync')} | {cell(shape, 'mount_tar')} | {cell(shape, 'local_cp', 'local')} | "
              f"{per_file(shape, 'cp')}; {per_file(shape, 'rsync')}; {per_file(shape, 'tar')} |")
    print()
    print("Times are medians; (Nx) is the time ÷ `arc restore` of the same snapshot.")
    bad = [r for r in rows if r["step"].endswith(".verify")]
    print("Every copy matched the source." if not bad else f"MISMATCHES: {', '.join(r['step'] + ' run ' + r['run'] for r in bad)}")
    seq, par = med("arc", "www.copy4_sequential"), med("arc", "www.copy4_parallel")
    if seq and par:
        print()
        print(f"Four www sites with `cp -a` through one mount: {par:.2f} s at once, {seq:.2f} s one after the other ({par / seq:.2f}x).")
PY
cat "$RES/summary.md"
ln -sfn "$(basename "$RES")" "$BENCH_DIR/results/mount-latest"
log "results in $RES"
