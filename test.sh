#!/usr/bin/env bash
# The project's test command (README, "The two commands"; CI runs it through
# .ci/run). On a fresh Debian machine, as root, it installs the system tools
# and database servers the tests use (the packages' own services are not
# started: the tests start their servers themselves, on unix sockets in
# temporary directories), then runs every test binary of the workspace even
# when one fails, with the test-only fault hooks compiled in, and ends with
# one line:
#
#   N passed, N failed, N skipped (what was skipped and why)
#
# Tests that need root, /dev/fuse, a database server or a tool print
# `SKIP: <test>: <reason>` when it is missing (tests/e2e/util.rs, require!);
# with CI set they fail instead. Extra arguments go to `cargo test` (a test
# name filter, for example: ./test.sh mount).
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages, each with a file that shows it is installed.
packages=(
  "tar:/usr/bin/tar"
  "util-linux:/usr/bin/setpriv"
  "libarchive-tools:/usr/bin/bsdtar"
  "fuse3:/usr/bin/fusermount3"
  "mariadb-server:/usr/sbin/mariadbd"
  "mariadb-backup:/usr/bin/mariabackup"
  "postgresql:/usr/lib/postgresql"
  "redis-server:/usr/bin/redis-server"
  "redis-tools:/usr/bin/redis-cli"
  "strace:/usr/bin/strace"
  "openssh-server:/usr/sbin/sshd"
  "openssh-client:/usr/bin/ssh"
  "python3-pip:/usr/bin/pip3"
  "rsync:/usr/bin/rsync"
  "acl:/usr/bin/setfacl"
  "chromium:/usr/bin/chromium"
)
need=()
for p in "${packages[@]}"; do
  [ -e "${p#*:}" ] || need+=("${p%%:*}")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing ${need[*]}" >&2
    # policy-rc.d 101 keeps the packages' maintainer scripts from starting
    # their services (MariaDB, PostgreSQL, Redis) system-wide.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
    fi
    status=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${need[@]}" >/dev/null; } || status=$?
    [ "$own_policy" = 1 ] && rm -f "$policy"
    [ "$status" = 0 ] || { echo "test.sh: apt-get install ${need[*]} failed" >&2; exit "$status"; }
  else
    echo "test.sh: not installed: ${need[*]} (run as root to install them); tests that need them will be skipped" >&2
  fi
fi

# Servers for the remote-repository tests (tests/e2e/backends.rs), kept in
# a tool cache outside the repository so a machine pays for them once:
# s3s-fs 0.14.1 (0.17 needs a newer rustc) and wsgidav.
CACHE=${ARC_TOOL_CACHE:-$HOME/.cache/arc-tools}
export ARC_TOOL_CACHE=$CACHE
if [ ! -x "$CACHE/s3s-fs-0.14.1/bin/s3s-fs" ]; then
  echo "test.sh: building s3s-fs 0.14.1 into $CACHE (about 2 minutes, once)" >&2
  nice -n 10 cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$CACHE/s3s-fs-0.14.1" -q ||
    echo "test.sh: cargo install s3s-fs failed; the S3 tests will say so" >&2
fi
if ! command -v wsgidav >/dev/null; then
  echo "test.sh: installing wsgidav (pip)" >&2
  { pip3 install -q wsgidav cheroot 2>/dev/null || pip3 install -q --break-system-packages wsgidav cheroot; } ||
    echo "test.sh: pip install wsgidav failed; the WebDAV tests will say so" >&2
fi

log=$(mktemp)
garage_log=$(mktemp)
garage_bin=$(mktemp -d)
trap 'rm -rf "$log" "$garage_log" "$garage_bin"' EXIT
args=(--release --workspace --no-fail-fast --features arc-cli/fault-injection)

# The distributed tier (tests/distributed.sh: a 3-node Garage cluster) runs
# when its binary is cached and no test filter was given. It runs beside
# `cargo test`, not after it: it spends most of its ~4 minutes waiting
# (nodes starting and coming back, prune's grace periods), so beside the
# test binaries it adds little to the wall time. It gets its own copy of
# the arc binary, so nothing cargo does later can swap it mid-run. Its
# result goes into the log as one more test, after cargo's, so the closing
# line counts it.
garage=0
if [ $# = 0 ] && [ -x "$CACHE/garage-2.5.0/bin/garage" ]; then
  garage=1
fi
set +e
status=0
garage_pid=
start=$SECONDS
if [ "$garage" = 1 ]; then
  # Compile everything `cargo test` runs first (the same command, so the
  # test run below builds nothing), for the tier's arc binary.
  if cargo test "${args[@]}" --no-run 2>&1 | tee -a "$log"; [ "${PIPESTATUS[0]}" = 0 ] &&
    cp target/release/arc "$garage_bin/arc"; then
    (
      t0=$SECONDS
      ARC_BIN=$garage_bin/arc tests/distributed.sh
      rc=$?
      echo "test.sh: tests/distributed.sh took $((SECONDS - t0)) s"
      exit "$rc"
    ) >"$garage_log" 2>&1 &
    garage_pid=$!
  else
    echo "tests/distributed.sh not run: the build failed" >"$garage_log"
  fi
fi
cargo test "${args[@]}" "$@" 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
echo "test.sh: cargo test took $((SECONDS - start)) s" | tee -a "$log"
if [ "$garage" = 1 ]; then
  garage_status=1
  if [ -n "$garage_pid" ]; then
    wait "$garage_pid"
    garage_status=$?
  fi
  tee -a "$log" <"$garage_log"
  if [ "$garage_status" = 0 ]; then
    echo "test result: ok. 1 passed; 0 failed; 0 ignored (tests/distributed.sh)" | tee -a "$log"
  else
    echo "tests/distributed.sh failed" >&2
    echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (tests/distributed.sh)" | tee -a "$log"
    status=1
  fi
elif [ $# = 0 ]; then
  echo "SKIP: tests/distributed.sh: no Garage binary at $CACHE/garage-2.5.0/bin/garage (tests/distributed.sh says how to build it)" | tee -a "$log"
  echo "test result: ok. 1 passed; 0 failed; 0 ignored (tests/distributed.sh)" >>"$log"
fi
set -e

# libtest counts a skipped test as passed; the SKIP lines say which.
awk '
  /^test result:/ {
    for (i = 1; i < NF; i++) {
      if ($(i+1) ~ /^passed/) p += $i
      if ($(i+1) ~ /^failed/) f += $i
      if ($(i+1) ~ /^ignored/) ig += $i
    }
  }
  /^SKIP: / {
    line = substr($0, 7)
    k = index(line, ": ")
    name = substr(line, 1, k - 1); reason = substr(line, k + 2)
    if (!(name in seen)) {
      seen[name] = 1; s++
      if (!(reason in by)) { order[++nr] = reason; by[reason] = name } else { by[reason] = by[reason] ", " name }
    }
  }
  END {
    why = ""
    for (i = 1; i <= nr; i++) why = why (i > 1 ? "; " : "") order[i] ": " by[order[i]]
    if (ig > 0) why = why (why != "" ? "; " : "") ig " marked #[ignore]"
    printf "%d passed, %d failed, %d skipped%s\n", p - s, f, s + ig, (why != "" ? " (" why ")" : "")
  }' "$log"
exit "$status"
