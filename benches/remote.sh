#!/usr/bin/env bash
# arc vs restic on the same S3 server, side by side in one run (BENCHMARKS.md, "Remote
# repositories"): for each server and workload shape, arc's first backup, no-change
# backup, restore and `cp -a` through `arc mount` (both with a cold local cache, as on a
# new host), and restic's first backup, no-change backup and restore (its cache emptied
# before the restore too); wall and CPU seconds (the tool's, and the server's, which runs
# on the same cores), HTTP requests and bytes each way. arc's first backup into a local
# repository on the same disk is timed too (issue 14: the S3 backup within 1.5x of it).
#
# Every step runs twice: once straight against the server, timed, and once through a
# small counting TCP proxy into a twin repository (the same data under another
# prefix), counted. Timing through the proxy, as this script did before, added a
# Python relay's latency to every request and so penalised whichever tool made more.
#
#   benches/remote.sh [SHAPE...]        (default: spool www)
#
# Servers: s3s-fs over a directory (always) and a 3-node Garage cluster (replication
# factor 3, tests/lib/garage.sh) when its binary is in the tool cache; ARC_BENCH_SERVERS
# picks ("s3s", "garage", or both, the default).
# Environment: ARC_BENCH_DIR [/var/tmp/arc-bench] (workloads generated there by
# gen_workloads.py if missing), ARC_BENCH_SCALE [1] (workload scale, as benches/run.sh),
# ARC_BIN [./target/release/arc], ARC_TOOL_CACHE [~/.cache/arc-tools] (s3s-fs 0.14.1 as
# ./test.sh installs it; garage-2.5.0 as tests/distributed.sh says), ARC_BENCH_COUNT [1]
# (0: skip the counted runs, the request columns then read "-"), ARC_BENCH_MOUNT [1]
# (0: skip the `cp -a` through the mount), ARC_BENCH_RESTORE_DIR [the work directory]
# (where restores and copies write: a tmpfs such as /dev/shm measures the tools without
# the target file system, which on ext4 makes every tool slow to create files after many
# were deleted: BENCHMARKS.md "Remote, session 10" and "session 12"), restic from apt; root
# for the page-cache drops and FUSE. Needs an idle machine for meaningful wall times;
# request and byte counts do not, and CPU seconds suffer less from load.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BENCH_DIR=${ARC_BENCH_DIR:-/var/tmp/arc-bench}
ARC=${ARC_BIN:-$ROOT/target/release/arc}
CACHE=${ARC_TOOL_CACHE:-$HOME/.cache/arc-tools}
S3S=$CACHE/s3s-fs-0.14.1/bin/s3s-fs
G=$CACHE/garage-2.5.0/bin/garage
SHAPES=("$@")
[ ${#SHAPES[@]} -gt 0 ] || SHAPES=(spool www)
read -r -a SERVERS <<< "${ARC_BENCH_SERVERS:-s3s garage}"
[[ -x $ARC ]] || { echo "no arc binary at $ARC (cargo build --release)" >&2; exit 1; }
[[ -x $S3S ]] || { echo "no s3s-fs at $S3S (./test.sh installs it)" >&2; exit 1; }
command -v restic >/dev/null || { echo "restic is not installed (apt-get install restic)" >&2; exit 1; }
command -v fusermount3 >/dev/null || { echo "fusermount3 is missing (apt-get install fuse3)" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { echo "remote.sh: $*" >&2; exit 1; }

python3 "$HERE/gen_workloads.py" "$BENCH_DIR" --scale "${ARC_BENCH_SCALE:-1}" --shapes "$(IFS=,; echo "${SHAPES[*]}")" >/dev/null
W=$(mktemp -d "$BENCH_DIR/remote.XXXXXX")
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# The counting proxy: bytes each way, and requests, parsed from the
# framing of each client stream.
cat >"$W/proxy.py" <<'PY'
import os, socket, sys, threading
listen, target, counter = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
stats = {"up": 0, "down": 0, "requests": 0}
lock = threading.Lock()
class Requests:
    """Counts the HTTP/1.1 requests of one client stream by its framing: a
    header block, then a body of Content-Length bytes or chunked. Looking
    for request lines in the bytes instead missed every request that
    followed a body (a PUT's ends in binary, not CRLF)."""
    def __init__(self):
        self.buf, self.body, self.chunked = b"", 0, False
    def feed(self, data):
        self.buf += data
        n = 0
        while True:
            if self.body:
                take = min(self.body, len(self.buf))
                self.buf, self.body = self.buf[take:], self.body - take
                if self.body:
                    return n
            if self.chunked:
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return n
                size = int(self.buf[:end].split(b";")[0] or b"0", 16)
                self.buf = self.buf[end + 2:]
                if size == 0:
                    self.chunked = False
                    self.body = 2  # the CRLF after the last chunk (no trailers)
                else:
                    self.body = size + 2
                continue
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return n
            head, self.buf = self.buf[:end].lower(), self.buf[end + 4:]
            n += 1
            for line in head.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                if key.strip() == b"content-length":
                    self.body = int(value.strip())
                elif key.strip() == b"transfer-encoding" and b"chunked" in value:
                    self.chunked = True
def pump(src, dst, key, requests):
    while True:
        data = src.recv(1 << 16)
        if not data:
            break
        with lock:
            stats[key] += len(data)
            if requests:
                stats["requests"] += requests.feed(data)
        dst.sendall(data)
    try: dst.shutdown(socket.SHUT_WR)
    except OSError: pass
def dump():
    # Written aside and renamed, so a reader never sees a half-written file.
    try:
        with lock, open(counter + ".tmp", "w") as f:
            f.write(f'{stats["requests"]} {stats["up"]} {stats["down"]}\n')
        os.replace(counter + ".tmp", counter)
    except OSError:
        pass  # the work directory is being removed: the run is over
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", listen)); srv.listen(128)
threading.Thread(target=lambda: [dump() or threading.Event().wait(0.2) for _ in iter(int, 1)], daemon=True).start()
while True:
    c, _ = srv.accept()
    s = socket.create_connection(("127.0.0.1", target))
    threading.Thread(target=pump, args=(c, s, "up", Requests()), daemon=True).start()
    threading.Thread(target=pump, args=(s, c, "down", None), daemon=True).start()
PY
MNT=$W/mnt
mkdir -p "$MNT"
R=$W
[[ -z ${ARC_BENCH_RESTORE_DIR:-} ]] || R=$(mktemp -d "$ARC_BENCH_RESTORE_DIR/arc-remote.XXXXXX")
trap 'mountpoint -q "$MNT" && fusermount3 -u -z "$MNT"; kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$W" "$R"' EXIT
drop_caches() { sync; if [[ -w /proc/sys/vm/drop_caches ]]; then echo 3 > /proc/sys/vm/drop_caches; fi; }

counts() { # "requests up down" so far (0 0 0 before a proxy runs)
  sleep 0.5
  [[ -e $COUNTER ]] || { echo "0 0 0"; return; }
  cat "$COUNTER"
}
# Children's CPU seconds (user + sys) so far, into FILE: bash's `times`, whose second
# line is the children's. Never in a subshell ($(...)), whose children are its own.
cpu_to() { times >"$1"; }
# The server's CPU seconds (user + sys, all its processes) so far: on one
# machine the server takes its share of the same cores, and a tool that
# makes it work harder pays for that in wall time.
SERVER_PIDS=
server_cpu() {
  local ticks=0 p
  for p in $SERVER_PIDS; do ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$ticks $(getconf CLK_TCK)"
}
# run LABEL PREP COMMAND...: PREP, then COMMAND timed against the server (EP=$SPORT,
# SUF=""), then PREP and COMMAND again through the proxy into the twin repositories
# (EP=$PPORT, SUF=-counted), counted. Both see EP and SUF; repository URLs are built
# from them. Without a server (the local reference) EP is empty and one run is made.
run() {
  local label=$1 prep=$2 t0 t1 c0 c1 before after
  shift 2
  EP=${SPORT:-} SUF=""
  $prep
  server_cpu >"$W/scpu0"; cpu_to "$W/cpu0"; t0=$(date +%s.%N)
  "$@" >/dev/null 2>"$W/err" || { echo "$label failed: $(tail -3 "$W/err")" >&2; exit 1; }
  t1=$(date +%s.%N); cpu_to "$W/cpu1"; server_cpu >"$W/scpu1"
  before="- - -" after="- - -"
  if [[ -n ${SPORT:-} && ${ARC_BENCH_COUNT:-1} != 0 ]]; then
    EP=$PPORT SUF=-counted
    $prep
    before=$(counts)
    "$@" >/dev/null 2>"$W/err" || { echo "$label (counted) failed: $(tail -3 "$W/err")" >&2; exit 1; }
    after=$(counts)
  elif [[ -z ${SPORT:-} ]]; then
    before="0 0 0" after="0 0 0"
  fi
  python3 - "$label" "$t0" "$t1" "$W/cpu0" "$W/cpu1" "$before" "$after" "$W/scpu0" "$W/scpu1" "${SPORT:+server}" <<'PY'
import re, sys
def cpu(path):
    line = open(path).read().splitlines()[1]
    return sum(float(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", line))
label, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
c0, c1 = cpu(sys.argv[4]), cpu(sys.argv[5])
b, a = sys.argv[6].split(), sys.argv[7].split()
if "-" in a:
    req = up = down = "-"
else:
    b, a = [int(x) for x in b], [int(x) for x in a]
    req, up, down = a[0] - b[0], f"{(a[1] - b[1]) / 2**20:.1f}", f"{(a[2] - b[2]) / 2**20:.1f}"
def ticks(path):
    t, hz = open(path).read().split()
    return int(t) / int(hz)
server = f"{ticks(sys.argv[9]) - ticks(sys.argv[8]):.1f}" if sys.argv[10:] == ["server"] else "-"
print(f"| {label} | {t1 - t0:.1f} | {req} | {up} | {down} | {c1 - c0:.1f} | {server} |", flush=True)
PY
}

# `cp -a` of the newest snapshot out of `arc mount` into DEST.
mount_copy() { # repo dest
  "$ARC" --repo "$1" mount "$MNT" >"$W/mount.log" 2>&1 &
  local pid=$! _
  for _ in $(seq 600); do [[ -e $MNT/latest ]] && break; sleep 0.1; done
  [[ -e $MNT/latest ]] || { kill "$pid"; fail "arc mount did not come up: $(tail -3 "$W/mount.log")"; }
  cp -a "$MNT/latest/." "$2"
  kill -INT "$pid"; wait "$pid" || true
  while mountpoint -q "$MNT"; do fusermount3 -u -z "$MNT"; done
}

# The steps. Each builds its repository URL from EP and SUF (run above).
arc_url() { echo "s3:http://127.0.0.1:$EP/bench-arc/$shape$SUF"; }
restic_url() { echo "s3:http://127.0.0.1:$EP/bench-restic/$shape$SUF"; }
no_prep() { :; }
cold() { drop_caches; }
# A new host: no local cache, nothing of the source or target in the page cache.
new_host() { rm -rf "$XDG_CACHE_HOME" "$R/r-arc-$shape$SUF"; mkdir -p "$R/r-arc-$shape$SUF"; drop_caches; }
restic_new_host() { rm -rf "$RESTIC_CACHE_DIR" "$R/r-restic-$shape$SUF"; drop_caches; }
local_backup() { "$ARC" --repo "$W/local-$shape" backup "$src"; }
arc_backup() { "$ARC" --repo "$(arc_url)" backup "$src"; }
arc_restore() { "$ARC" --repo "$(arc_url)" restore latest --target "$R/r-arc-$shape$SUF"; }
arc_mount_copy() { mount_copy "$(arc_url)" "$R/r-arc-$shape$SUF"; }
restic_backup() { restic -r "$(restic_url)" backup "$src"; }
restic_restore() { restic -r "$(restic_url)" restore latest --target "$R/r-restic-$shape$SUF"; }

export ARC_PASSWORD=bench RESTIC_PASSWORD=bench XDG_CACHE_HOME=$W/cache RESTIC_CACHE_DIR=$W/restic-cache
echo "| run | wall s | requests | MiB sent | MiB received | CPU s | server CPU s |"
echo "|---|---|---|---|---|---|---|"
SPORT= COUNTER=$W/counter-none
for shape in "${SHAPES[@]}"; do
  src=$BENCH_DIR/$shape
  "$ARC" --repo "$W/local-$shape" init >/dev/null
  run "arc first backup $shape, local repository" cold local_backup
  rm -rf "$W/local-$shape"
done

for server in "${SERVERS[@]}"; do
  case $server in
    s3s)
      SPORT=$(free_port)
      mkdir -p "$W/s3/bench-arc" "$W/s3/bench-restic"
      "$S3S" --host 127.0.0.1 --port "$SPORT" --access-key GK0123456789abcdef01234567 \
        --secret-key 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef "$W/s3" >"$W/s3.log" 2>&1 &
      pids+=("$!")
      SERVER_PIDS=$!
      until curl -s -o /dev/null "http://127.0.0.1:$SPORT"; do sleep 0.1; done
      export AWS_ACCESS_KEY_ID=GK0123456789abcdef01234567 AWS_DEFAULT_REGION=us-east-1
      export AWS_SECRET_ACCESS_KEY=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
      ;;
    garage)
      if [[ ! -x $G ]]; then log "no Garage at $G: the Garage rows are skipped (tests/distributed.sh says how to build it)"; continue; fi
      # shellcheck source=tests/lib/garage.sh
      source "$ROOT/tests/lib/garage.sh"
      garage_cluster bench-arc
      garage_bucket bench-restic
      SPORT=$(s3port 1)
      SERVER_PIDS="${node_pid[*]}"
      export AWS_ACCESS_KEY_ID=$GARAGE_KEY AWS_SECRET_ACCESS_KEY=$GARAGE_SECRET AWS_DEFAULT_REGION=$GARAGE_REGION
      ;;
    *) fail "unknown server $server (s3s or garage)" ;;
  esac
  PPORT=$(free_port)
  # A counter of this server's own: the previous server's proxy is stopped
  # below, but a file shared with it would mix the two.
  COUNTER=$W/counter-$server
  python3 "$W/proxy.py" "$PPORT" "$SPORT" "$COUNTER" &
  proxy=$!
  pids+=("$proxy")
  until [ -s "$COUNTER" ]; do sleep 0.1; done
  for shape in "${SHAPES[@]}"; do
    src=$BENCH_DIR/$shape
    log "$server $shape: arc"
    EP=$SPORT
    for SUF in "" -counted; do
      "$ARC" --repo "$(arc_url)" init >/dev/null
      restic -r "$(restic_url)" init >/dev/null
    done
    run "arc first backup $shape ($server)" cold arc_backup
    run "arc no-change backup $shape ($server)" no_prep arc_backup
    run "arc restore $shape ($server, cold cache)" new_host arc_restore
    if [[ ${ARC_BENCH_MOUNT:-1} != 0 ]]; then
      run "arc cp -a through the mount $shape ($server, cold cache)" new_host arc_mount_copy
    fi
    rm -rf "$R/r-arc-$shape" "$R/r-arc-$shape-counted"
    log "$server $shape: restic"
    run "restic first backup $shape ($server)" cold restic_backup
    run "restic no-change backup $shape ($server)" no_prep restic_backup
    run "restic restore $shape ($server, cold cache)" restic_new_host restic_restore
    rm -rf "$R/r-restic-$shape" "$R/r-restic-$shape-counted"
  done
  kill "$proxy"
  SPORT=
done
