#!/usr/bin/env bash
# The distributed tier: arc on a real 3-node Garage cluster (replication
# factor 3) on loopback ports.
#
#   1. a backup while one node is down completes;
#   2. a backup while two nodes are down fails with a clear error, writes
#      no snapshot and damages nothing; once the nodes are back the next
#      backup succeeds;
#   3. four hosts (--host) back up overlapping trees at once while prune
#      runs both of its phases (mark, then sweep after the grace period);
#   4. every snapshot restores byte for byte, `check --read-data` passes,
#      and content the hosts share is stored once.
#
# Needs Garage 2.5.0 in the tool cache (about 12 minutes to build, once):
#   nice -n 19 cargo install garage --version 2.5.0 --locked \
#     --root "${ARC_TOOL_CACHE:-$HOME/.cache/arc-tools}/garage-2.5.0"
# and arc (target/release/arc, or ARC_BIN). ./test.sh runs this script when
# the Garage binary is there. Exit status 0 only if every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${ARC_TOOL_CACHE:-$HOME/.cache/arc-tools}
G=$CACHE/garage-2.5.0/bin/garage
if [ ! -x "$G" ]; then
  echo "distributed.sh: no Garage at $G; build it with:" >&2
  echo "  nice -n 19 cargo install garage --version 2.5.0 --locked --root \"$CACHE/garage-2.5.0\"" >&2
  exit 2
fi
ARC=${ARC_BIN:-$PWD/target/release/arc}
if [ ! -x "$ARC" ]; then
  nice cargo build --release -q -p arc-cli
fi

W=$(mktemp -d "${TMPDIR:-/tmp}/arc-garage.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { echo "distributed.sh: FAILED: $*" >&2; exit 1; }

# shellcheck source=tests/lib/garage.sh
source tests/lib/garage.sh
step "starting 3 Garage nodes"
garage_cluster arc-test
KEY=$GARAGE_KEY SECRET=$GARAGE_SECRET

export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_DEFAULT_REGION=garage
export HOME=$W/home XDG_CACHE_HOME=$W/home/.cache ARC_PASSWORD=distributed-test
unset ARC_REPO
mkdir -p "$HOME"
# arc talks to node 1; nodes 2 and 3 are the ones that fail.
R="s3:http://127.0.0.1:$(s3port 1)/arc-test/fleet"
arc() { timeout 900 "$ARC" --repo "$R" "$@"; }

# Trees: a "CMS release" every host has, and each host's own files.
mkdir -p "$W/src/shared"
for f in 1 2 3 4; do head -c $((2 * 1024 * 1024)) /dev/urandom >"$W/src/shared/lib$f.php"; done
make_host() { # host round
  local d=$W/src/h$1-r$2
  mkdir -p "$d/own"
  cp -a "$W/src/shared" "$d/cms"
  head -c $((1024 * 1024 + $1 * 1000 + $2)) /dev/urandom >"$d/own/data.bin"
  echo "host $1 round $2" >"$d/own/note.txt"
  echo "$d"
}
snap_count() { arc --json snapshots | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

step "init with a 5 s prune grace period, first backup"
arc init --prune-grace 5s
arc backup --host h0 "$(make_host 0 0)" >/dev/null

step "backup with one node down completes"
stop_node 3
arc backup --host h1 "$(make_host 1 0)" >/dev/null || fail "backup with one node down"
[ "$(snap_count)" = 2 ] || fail "expected 2 snapshots"

step "backup with two nodes down fails cleanly"
stop_node 2
src=$(make_host 2 0)
set +e
out=$(arc backup --host h2 "$src" 2>&1)
status=$?
set -e
[ "$status" != 0 ] || fail "a backup with two of three nodes down reported success"
echo "$out" | tail -3
echo "$out" | grep -q "arc: error" || fail "no error line: $out"
# Garage answers 503 without its quorum: retried, and said so.
echo "$out" | grep -q "gave up after 7 attempts" || fail "the error does not say it was retried: $out"
echo "$out" | grep -q "$SECRET" && fail "the secret key was printed"

step "nodes back: no snapshot from the failed backup, repository intact, the next backup succeeds"
start_node 2
start_node 3
ok=0
for _ in $(seq 120); do
  if out=$(arc check 2>&1); then ok=1; break; fi
  sleep 1
done
[ "$ok" = 1 ] || fail "the cluster did not accept requests within 120 s after the nodes returned: $out"
[ "$(snap_count)" = 2 ] || fail "the failed backup left a snapshot"
arc check >/dev/null || fail "check after the failed backup"
arc backup --host h2 "$src" >/dev/null || fail "backup after the nodes returned"
[ "$(snap_count)" = 3 ] || fail "expected 3 snapshots"

step "four hosts back up at once while prune runs both phases"
for round in 1 2; do
  bpids=()
  for h in 1 2 3 4; do
    d=$(make_host $h $round)
    arc backup --host "h$h" "$d" >"$W/b$h-$round.log" 2>&1 &
    bpids+=("$!")
  done
  # Phase 1 (mark) during the backups; phase 2 (sweep) after the grace
  # period, while the second round's backups run.
  arc prune >"$W/prune-$round.log" 2>&1 || fail "prune in round $round: $(cat "$W/prune-$round.log")"
  for i in "${!bpids[@]}"; do
    wait "${bpids[$i]}" || fail "backup of host $((i + 1)) in round $round: $(tail -3 "$W/b$((i + 1))-$round.log")"
  done
  # Garbage for the next prune: all but the newest snapshot of each host.
  arc forget --keep-last 1 --group-by host >/dev/null || fail "forget"
  sleep 6
done
arc prune >"$W/prune-final.log" 2>&1 || fail "final prune"
cat "$W"/prune-*.log
grep -qE 'marked [1-9]' "$W"/prune-*.log || fail "no prune marked anything: the test exercised nothing"
grep -qE 'deleted [1-9]' "$W"/prune-*.log || fail "no prune swept a mark: the test exercised nothing"

step "every snapshot restores byte for byte"
arc --json snapshots >"$W/snaps.json"
python3 - "$W/snaps.json" >"$W/snaps.txt" <<'PY'
import json, sys
for s in json.load(open(sys.argv[1])):
    print(s["id"], s["paths"][0])
PY
n=0
while read -r id path; do
  t=$W/restore/$id
  arc restore "$id" --target "$t" >/dev/null || fail "restore of $id"
  diff -r "$path" "$t$path" >/dev/null || fail "snapshot $id differs from $path"
  n=$((n + 1))
done <"$W/snaps.txt"
[ "$n" = 5 ] || fail "$n snapshots, expected the newest of each of the 5 hosts"
echo "$n snapshots restored identically"

step "check --read-data, and shared content is stored once"
arc check --read-data >/dev/null || fail "check --read-data"
stored=$(arc --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["stored_bytes"])')
# Live: at most 5 snapshots' own data (~1 MiB each) plus the 8 MiB shared
# once; 4 copies of the shared files would be 32 MiB. Random data does
# not compress, so this shows dedup, with room for unpruned packs.
limit=$((24 * 1024 * 1024))
echo "stored $stored bytes (limit $limit)"
[ "$stored" -lt "$limit" ] || fail "stored $stored bytes: shared content stored more than once?"

echo
echo "distributed.sh: all checks passed"
