#!/usr/bin/env bash
# The requests each command makes of an S3 repository, by kind (LIST, GET, ranged GET,
# HEAD, PUT, DELETE) and prefix, counted by a small TCP proxy between arc and s3s-fs on
# loopback (format-spec/v2/remote.md section 4; BENCHMARKS.md "Remote, session 11").
#
#   benches/requests.sh up                 start s3s-fs and the counting proxy
#   benches/requests.sh setup              init, and a first backup of SHAPE through the proxy
#   benches/requests.sh nochange|snapshots|ls|restore|mount
#                                          one command, then its requests
#   benches/requests.sh stop
#
# nochange, snapshots, ls and restore use the cache of the setup's host (warm); mount
# starts with an empty cache and counts a `cp -a MNT/latest/.` into /dev/shm (needs
# /dev/fuse). Counts are exact and do not depend on load.
# Env: ARC (binary; default target/release/arc), SHAPE (a directory under
# /var/tmp/arc-bench, default www), W (work directory), S3S (the s3s-fs binary).
set -euo pipefail
ARC=${ARC:-$(cd "$(dirname "$0")/.." && pwd)/target/release/arc}
SHAPE=${SHAPE:-www}
W=${W:-/var/tmp/arc-requests}
S3S=${S3S:-$HOME/.cache/arc-tools/s3s-fs-0.14.1/bin/s3s-fs}
SPORT=${SPORT:-39511} PPORT=${PPORT:-39512}
export AWS_ACCESS_KEY_ID=GK0123456789abcdef01234567 AWS_DEFAULT_REGION=us-east-1
export AWS_SECRET_ACCESS_KEY=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
export ARC_PASSWORD=${ARC_PASSWORD:-bench}
URL="s3:http://127.0.0.1:$PPORT/bench/$SHAPE"
mkdir -p "$W"

# The proxy: one connection to the server per client connection; appends each
# request's method, target and whether it is ranged to $W/requests.log; SIGUSR1
# empties the log.
cat >"$W/proxy.py" <<'PY'
import signal, socket, sys, threading
listen, target, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()
log = open(path, "w")
def reset(*_):
    with lock:
        log.seek(0); log.truncate()
signal.signal(signal.SIGUSR1, reset)
class Requests:
    """Splits the client's byte stream into HTTP/1.1 requests (bodies by
    Content-Length or chunked encoding) and logs each request line."""
    def __init__(self):
        self.buf, self.body, self.chunked = b"", 0, False
    def feed(self, data):
        self.buf += data
        while True:
            if self.body:
                take = min(self.body, len(self.buf))
                self.buf, self.body = self.buf[take:], self.body - take
                if self.body:
                    return
            if self.chunked:
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(self.buf[:end].split(b";")[0] or b"0", 16)
                self.buf = self.buf[end + 2:]
                self.chunked, self.body = (False, 2) if size == 0 else (True, size + 2)
                continue
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            lines = head.split(b"\r\n")
            ranged = False
            for line in lines[1:]:
                key, _, value = line.partition(b":")
                k = key.strip().lower()
                if k == b"content-length":
                    self.body = int(value.strip())
                elif k == b"transfer-encoding" and b"chunked" in value:
                    self.chunked = True
                elif k == b"range":
                    ranged = True
            method, target = lines[0].split(b" ")[:2]
            with lock:
                log.write("%s %s %s\n" % (method.decode(), target.decode(), "ranged" if ranged else "-"))
                log.flush()
def pump(src, dst, requests):
    while True:
        try: data = src.recv(1 << 16)
        except OSError: data = b""
        if not data:
            break
        if requests:
            requests.feed(data)
        try: dst.sendall(data)
        except OSError: break
    try: dst.shutdown(socket.SHUT_WR)
    except OSError: pass
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", listen)); srv.listen(256)
while True:
    c, _ = srv.accept()
    s = socket.create_connection(("127.0.0.1", target))
    threading.Thread(target=pump, args=(c, s, Requests()), daemon=True).start()
    threading.Thread(target=pump, args=(s, c, None), daemon=True).start()
PY

# Requests of the log by kind and prefix (`data`, `index`, `snapshots`, ...).
counts() {
  sleep 0.5
  python3 - "$W/requests.log" <<'PY'
import collections, sys, urllib.parse
c = collections.Counter()
for line in open(sys.argv[1]):
    method, target, ranged = line.split()
    u = urllib.parse.urlsplit(target)
    q = urllib.parse.parse_qs(u.query)
    if method == "GET" and "list-type" in q:
        kind, where = "LIST", q.get("prefix", [""])[0].strip("/").split("/")[-1]
    else:
        kind = "GET-range" if method == "GET" and ranged == "ranged" else method
        if method == "POST" and "delete" in q:
            kind = "DELETE-many"
        segs = [s for s in u.path.split("/") if s]
        where = segs[2] if len(segs) > 2 else segs[-1]
    c[(kind, where)] += 1
by_kind = collections.Counter()
for (k, _), n in c.items():
    by_kind[k] += n
print("; ".join(f"{k} {w}: {n}" for (k, w), n in sorted(c.items())))
print("by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())) + f"; total {sum(by_kind.values())}")
PY
}
reset() { kill -USR1 "$(cat "$W/proxy.pid")"; sleep 0.3; }
say() { echo "== $1 ($ARC, $SHAPE, $(date -u +%FT%H:%M:%SZ), load $(cut -d' ' -f1 /proc/loadavg))"; }
warm() { XDG_CACHE_HOME=$W/cache "$ARC" --repo "$URL" "$@"; }

case $1 in
  up)
    mkdir -p "$W/s3/bench"
    setsid "$S3S" --host 127.0.0.1 --port "$SPORT" --access-key "$AWS_ACCESS_KEY_ID" \
      --secret-key "$AWS_SECRET_ACCESS_KEY" "$W/s3" >"$W/s3.log" 2>&1 &
    echo $! >"$W/s3.pid"
    setsid python3 "$W/proxy.py" "$PPORT" "$SPORT" "$W/requests.log" >"$W/proxy.log" 2>&1 &
    echo $! >"$W/proxy.pid"
    until curl -s -o /dev/null "http://127.0.0.1:$SPORT"; do sleep 0.1; done
    ;;
  setup)
    warm init
    warm backup "/var/tmp/arc-bench/$SHAPE" >/dev/null
    ;;
  nochange) reset; warm backup "/var/tmp/arc-bench/$SHAPE" >/dev/null; say "no-change backup"; counts ;;
  snapshots) reset; warm snapshots >/dev/null; say snapshots; counts ;;
  ls) reset; warm ls latest >/dev/null; say "ls latest"; counts ;;
  restore)
    T=/dev/shm/arc-requests-restore; rm -rf "$T"
    reset; warm restore latest --target "$T" >/dev/null; say "restore latest"; counts
    rm -rf "$T"
    ;;
  mount)
    MNT=$W/mnt T=/dev/shm/arc-requests-copy; mkdir -p "$MNT"; rm -rf "$T" "$W/cache-mount"; mkdir -p "$T"
    XDG_CACHE_HOME=$W/cache-mount "$ARC" --repo "$URL" mount "$MNT" 2>"$W/mount.log" &
    pid=$!
    for _ in $(seq 600); do [[ -e $MNT/latest ]] && break; sleep 0.1; done
    reset
    t0=$(date +%s.%N); cp -a "$MNT/latest/." "$T"; t1=$(date +%s.%N)
    say "cp -a out of the mount (empty cache), $(echo "$t1 - $t0" | bc) s"; counts
    kill -INT $pid; wait $pid || true
    rm -rf "$T"
    ;;
  stop) kill "$(cat "$W/proxy.pid")" "$(cat "$W/s3.pid")" || true ;;
  *) echo "usage: $0 up|setup|nochange|snapshots|ls|restore|mount|stop" >&2; exit 2 ;;
esac
