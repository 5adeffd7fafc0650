#!/usr/bin/env bash
# Restores from S3, arc binaries and restic side by side, on servers and repositories
# kept between runs (issue 14; BENCHMARKS.md "Remote, session 12: restore"). Where
# benches/remote.sh times every step once in a long run, this backs up once and then
# alternates the restores, so that two binaries can be compared on a shared machine.
#
#   benches/restore_ab.sh up                  s3s-fs and a 3-node Garage cluster in the background
#   benches/restore_ab.sh setup               backs up www, spool and the dump's two days (--stdin)
#                                             with arc and restic into both servers
#   benches/restore_ab.sh run ROUNDS TARGET LABEL=BIN... [restic]
#                                             ROUNDS rounds; in each, every LABEL=BIN (and restic)
#                                             restores each of $SHAPES from each of $SERVERS into a
#                                             fresh directory under TARGET (a tmpfs or the disk) with
#                                             an empty cache; one line per restore: label, server,
#                                             shape, wall, user, sys, peak RSS, minor page faults,
#                                             the server's CPU seconds and the load
#   benches/restore_ab.sh down
#
# Env: W [/var/tmp/arc-restore-ab] (servers and state), ARC (the binary that makes the
# backups; default target/release/arc), SHAPES ["www"] (www, spool; dump2: the second day
# of benches/run.sh's dump, backed up after the first with --stdin; pg2: the same with the pg
# series of `gen_dump_series.py PG_SERIES --rows 2000000`, whose day 2 is nearly all
# deltas), SERVERS ["s3s garage"], ARC_TOOL_CACHE, ARC_BENCH_DIR (the workloads of
# benches/run.sh), PG_SERIES [$W/series]. Needs GNU time and restic.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
W=${W:-/var/tmp/arc-restore-ab}
ARC=${ARC:-$ROOT/target/release/arc}
CACHE=${ARC_TOOL_CACHE:-$HOME/.cache/arc-tools}
BENCH_DIR=${ARC_BENCH_DIR:-/var/tmp/arc-bench}
S3S=$CACHE/s3s-fs-0.14.1/bin/s3s-fs
G=$CACHE/garage-2.5.0/bin/garage
read -r -a SHAPE_LIST <<<"${SHAPES:-www}"
PG_SERIES=${PG_SERIES:-$W/series}
# The directory with day1.sql and day2.sql of a two-day dump shape.
days() { case $1 in dump2) echo "$BENCH_DIR/dump" ;; pg2) echo "$PG_SERIES/pg" ;; esac; }
read -r -a SERVER_LIST <<<"${SERVERS:-s3s garage}"
export ARC_PASSWORD=bench RESTIC_PASSWORD=bench
fail() { echo "restore_ab.sh: $*" >&2; exit 1; }
mkdir -p "$W"

# The servers' ports and pids, and Garage's key, written by `up`.
ENV=$W/servers.env
endpoint() { # server
  # shellcheck disable=SC1090
  source "$ENV"
  case $1 in
    s3s) echo "$S3S_PORT" ;;
    garage) echo "$GARAGE_PORT" ;;
  esac
}
creds() { # server: exports the keys of that server
  # shellcheck disable=SC1090
  source "$ENV"
  export AWS_ACCESS_KEY_ID=GK0123456789abcdef01234567 AWS_DEFAULT_REGION=us-east-1
  export AWS_SECRET_ACCESS_KEY=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  [[ $1 == garage ]] && export AWS_DEFAULT_REGION=garage
  return 0
}
arc_url() { echo "s3:http://127.0.0.1:$(endpoint "$1")/bench-arc/$2"; }
restic_url() { echo "s3:http://127.0.0.1:$(endpoint "$1")/bench-restic/$2"; }
server_cpu() { # server: CPU seconds of its processes so far
  # shellcheck disable=SC1090
  source "$ENV"
  local pids ticks=0 p
  case $1 in s3s) pids=$S3S_PID ;; garage) pids=$GARAGE_PIDS ;; esac
  for p in $pids; do ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "scale=2; $ticks / $(getconf CLK_TCK)" | bc
}

case ${1:-} in
  up)
    free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
    port=$(free_port)
    mkdir -p "$W/s3/bench-arc" "$W/s3/bench-restic"
    setsid "$S3S" --host 127.0.0.1 --port "$port" --access-key GK0123456789abcdef01234567 \
      --secret-key 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef "$W/s3" >"$W/s3.log" 2>&1 &
    s3s_pid=$!
    until curl -s -o /dev/null "http://127.0.0.1:$port"; do sleep 0.1; done
    pids=()
    # shellcheck source=tests/lib/garage.sh
    source "$ROOT/tests/lib/garage.sh"
    garage_cluster bench-arc
    garage_bucket bench-restic
    printf 'S3S_PORT=%s\nS3S_PID=%s\nGARAGE_PORT=%s\nGARAGE_PIDS="%s"\n' \
      "$port" "$s3s_pid" "$(s3port 1)" "${node_pid[*]}" >"$ENV"
    cat "$ENV"
    ;;
  setup)
    for server in "${SERVER_LIST[@]}"; do
      creds "$server"
      for shape in "${SHAPE_LIST[@]}"; do
        export XDG_CACHE_HOME=$W/backup-cache RESTIC_CACHE_DIR=$W/restic-backup-cache
        "$ARC" --repo "$(arc_url "$server" "$shape")" init >/dev/null
        restic -r "$(restic_url "$server" "$shape")" init >/dev/null
        case $shape in
          dump2 | pg2)
            for day in day1 day2; do
              "$ARC" --repo "$(arc_url "$server" "$shape")" backup --stdin --stdin-name db.sql \
                <"$(days "$shape")/$day.sql" >/dev/null
              restic -r "$(restic_url "$server" "$shape")" backup --stdin --stdin-filename db.sql \
                <"$(days "$shape")/$day.sql" >/dev/null
            done
            ;;
          *)
            "$ARC" --repo "$(arc_url "$server" "$shape")" backup "$BENCH_DIR/$shape" >/dev/null
            restic -r "$(restic_url "$server" "$shape")" backup "$BENCH_DIR/$shape" >/dev/null
            ;;
        esac
        echo "backed up $shape to $server"
      done
    done
    ;;
  run)
    rounds=$2 target=$3
    shift 3
    for i in $(seq "$rounds"); do
      for who in "$@"; do
        for server in "${SERVER_LIST[@]}"; do
          creds "$server"
          for shape in "${SHAPE_LIST[@]}"; do
            out=$target/ab-out
            rm -rf "$out" "$W/restore-cache"
            sync
            s0=$(server_cpu "$server")
            case $who in
              restic)
                label=restic
                RESTIC_CACHE_DIR=$W/restore-cache /usr/bin/time -f "%e %U %S %M %R" -o "$W/time" \
                  restic -r "$(restic_url "$server" "$shape")" restore latest --target "$out" >/dev/null
                ;;
              *=*)
                label=${who%%=*} bin=${who#*=}
                XDG_CACHE_HOME=$W/restore-cache /usr/bin/time -f "%e %U %S %M %R" -o "$W/time" \
                  "$bin" --repo "$(arc_url "$server" "$shape")" restore latest --target "$out" >/dev/null
                ;;
              *) fail "LABEL=BIN or restic, not $who" ;;
            esac
            s1=$(server_cpu "$server")
            read -r wall user sys rss minflt <"$W/time"
            if [[ $shape == dump2 || $shape == pg2 ]]; then
              f=$(find "$out" -name db.sql -type f | head -1)
              cmp -s "$f" "$(days "$shape")/day2.sql" || fail "$label: $shape restored from $server differs"
            fi
            printf '%s %s %s wall %s user %s sys %s rss_mb %s minflt %s server_cpu %s load %s\n' "$label" "$server" \
              "$shape" "$wall" "$user" "$sys" "$((rss / 1024))" "$minflt" "$(echo "$s1 - $s0" | bc)" \
              "$(cut -d' ' -f1 /proc/loadavg)"
          done
        done
      done
    done
    rm -rf "$target/ab-out"
    ;;
  down)
    # shellcheck disable=SC1090
    source "$ENV"
    # shellcheck disable=SC2086
    kill $S3S_PID $GARAGE_PIDS 2>/dev/null || true
    ;;
  *) sed -n '2,24p' "$0"; exit 2 ;;
esac
