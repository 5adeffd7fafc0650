#!/usr/bin/env bash
# arc vs restic on the same S3 server (s3s-fs on loopback), side by side in one run
# (BENCHMARKS.md, "Remote repositories"): for each tool, a first backup of a workload
# shape, a no-change backup, and a full restore; wall seconds, HTTP requests and bytes
# sent and received, counted by a small TCP proxy between the tool and the server.
#
#   benches/remote.sh [SHAPE...]        (default: spool www)
#
# Environment: ARC_BENCH_DIR [/var/tmp/arc-bench] (workloads generated there by
# gen_workloads.py if missing), ARC_BIN [./target/release/arc], ARC_TOOL_CACHE
# [~/.cache/arc-tools] (s3s-fs 0.14.1, as ./test.sh installs it), restic from apt.
# Needs an idle machine for meaningful times; request and byte counts do not.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BENCH_DIR=${ARC_BENCH_DIR:-/var/tmp/arc-bench}
ARC=${ARC_BIN:-$ROOT/target/release/arc}
CACHE=${ARC_TOOL_CACHE:-$HOME/.cache/arc-tools}
S3S=$CACHE/s3s-fs-0.14.1/bin/s3s-fs
SHAPES=("$@")
[ ${#SHAPES[@]} -gt 0 ] || SHAPES=(spool www)
[[ -x $ARC ]] || { echo "no arc binary at $ARC (cargo build --release)" >&2; exit 1; }
[[ -x $S3S ]] || { echo "no s3s-fs at $S3S (./test.sh installs it)" >&2; exit 1; }
command -v restic >/dev/null || { echo "restic is not installed (apt-get install restic)" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

python3 "$HERE/gen_workloads.py" "$BENCH_DIR" --shapes "${SHAPES[@]}" >/dev/null
W=$(mktemp -d "$BENCH_DIR/remote.XXXXXX")
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
KEY=GK0123456789abcdef01234567
SECRET=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
SPORT=$(free_port)
PPORT=$(free_port)
mkdir -p "$W/s3/bench-arc" "$W/s3/bench-restic"
"$S3S" --host 127.0.0.1 --port "$SPORT" --access-key "$KEY" --secret-key "$SECRET" "$W/s3" >"$W/s3.log" 2>&1 &
pids+=("$!")
# The counting proxy: bytes each way and requests (request lines at the
# start of the client's stream or after a blank line ending a header).
cat >"$W/proxy.py" <<'PY'
import re, socket, sys, threading
listen, target, counter = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
stats = {"up": 0, "down": 0, "requests": 0}
lock = threading.Lock()
REQ = re.compile(rb"(?:^|\r\n)(GET|PUT|POST|HEAD|DELETE) \S+ HTTP/1\.[01]\r\n")
def pump(src, dst, key, parse):
    tail = b""
    while True:
        data = src.recv(1 << 16)
        if not data:
            break
        with lock:
            stats[key] += len(data)
            if parse:
                buf = tail + data
                stats["requests"] += len(REQ.findall(buf))
                tail = buf[-64:]
        dst.sendall(data)
    try: dst.shutdown(socket.SHUT_WR)
    except OSError: pass
def dump():
    with lock, open(counter, "w") as f:
        f.write(f'{stats["requests"]} {stats["up"]} {stats["down"]}\n')
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", listen)); srv.listen(128)
threading.Thread(target=lambda: [dump() or threading.Event().wait(0.2) for _ in iter(int, 1)], daemon=True).start()
while True:
    c, _ = srv.accept()
    s = socket.create_connection(("127.0.0.1", target))
    threading.Thread(target=pump, args=(c, s, "up", True), daemon=True).start()
    threading.Thread(target=pump, args=(s, c, "down", False), daemon=True).start()
PY
python3 "$W/proxy.py" "$PPORT" "$SPORT" "$W/counter" &
pids+=("$!")
until [ -s "$W/counter" ] && curl -s -o /dev/null "http://127.0.0.1:$SPORT"; do sleep 0.1; done

export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_DEFAULT_REGION=us-east-1
export ARC_PASSWORD=bench RESTIC_PASSWORD=bench XDG_CACHE_HOME=$W/cache RESTIC_CACHE_DIR=$W/restic-cache
counts() { sleep 0.5; cat "$W/counter"; }
measure() { # label command...
  local before after t0 t1
  before=$(counts)
  t0=$(date +%s.%N)
  "${@:2}" >/dev/null 2>"$W/err" || { echo "$1 failed: $(tail -3 "$W/err")" >&2; exit 1; }
  t1=$(date +%s.%N)
  after=$(counts)
  python3 - "$1" "$t0" "$t1" "$before" "$after" <<'PY'
import sys
label, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
b = [int(x) for x in sys.argv[4].split()]; a = [int(x) for x in sys.argv[5].split()]
print(f"| {label} | {t1 - t0:.1f} | {a[0] - b[0]} | {(a[1] - b[1]) / 2**20:.1f} | {(a[2] - b[2]) / 2**20:.1f} |")
PY
}

echo "| run | wall s | requests | MiB sent | MiB received |"
echo "|---|---|---|---|---|"
for shape in "${SHAPES[@]}"; do
  src=$BENCH_DIR/$shape
  A="s3:http://127.0.0.1:$PPORT/bench-arc/$shape"
  R="s3:http://127.0.0.1:$PPORT/bench-restic/$shape"
  log "$shape: arc"
  "$ARC" --repo "$A" init >/dev/null
  measure "arc first backup $shape" "$ARC" --repo "$A" backup "$src"
  measure "arc no-change backup $shape" "$ARC" --repo "$A" backup "$src"
  rm -rf "$XDG_CACHE_HOME"
  measure "arc restore $shape (cold cache)" "$ARC" --repo "$A" restore latest --target "$W/r-arc-$shape"
  log "$shape: restic"
  restic -r "$R" init >/dev/null
  measure "restic first backup $shape" restic -r "$R" backup "$src"
  measure "restic no-change backup $shape" restic -r "$R" backup "$src"
  measure "restic restore $shape" restic -r "$R" restore latest --target "$W/r-restic-$shape"
  rm -rf "$W/r-arc-$shape" "$W/r-restic-$shape"
done
