#!/usr/bin/env bash
# Peak RSS and CPU of a first backup to each remote backend, binaries alternating (issue 14,
# BENCHMARKS.md "Remote, session 14: puts from the staged file"): how much memory a backup's
# uploads take on SFTP (OpenSSH's sshd), WebDAV (wsgidav) and S3 (a 3-node Garage cluster), at
# the default pack size and at larger ones. The servers run on loopback as tests/e2e/backends.rs
# starts them; every repository is deleted after its run (Garage: a fresh cluster per run, since
# it keeps three copies of everything).
#
#   benches/put_rss.sh ROUNDS LABEL=BIN...
#
# One line per backup: label, server, pack size, peak RSS (KiB), wall, user and sys seconds,
# the load, packs stored and files left in tmp/. Env: SHAPE [www] (a workload of benches/run.sh
# under ARC_BENCH_DIR [/var/tmp/arc-bench]), SERVERS ["sftp webdav garage"], PACK_SIZES
# ["16MiB 64MiB"], W [/var/tmp/arc-put-rss] (removed at the end), ARC_TOOL_CACHE. Needs root (sshd),
# wsgidav, GNU time and Garage 2.5.0 in the tool cache.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
ROUNDS=${1:?usage: put_rss.sh ROUNDS LABEL=BIN...}
shift
W=${W:-/var/tmp/arc-put-rss}
SRC=${ARC_BENCH_DIR:-/var/tmp/arc-bench}/${SHAPE:-www}
read -r -a SERVER_LIST <<<"${SERVERS:-sftp webdav garage}"
read -r -a SIZES <<<"${PACK_SIZES:-16MiB 64MiB}"
G=${ARC_TOOL_CACHE:-$HOME/.cache/arc-tools}/garage-2.5.0/bin/garage
fail() { echo "put_rss.sh: $*" >&2; exit 1; }
[[ -d $SRC ]] || fail "no workload at $SRC (benches/run.sh generates it)"
mkdir -p "$W/state" "$W/root" /run/sshd
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# sshd and wsgidav, serving $W/root.
S=$W/state
ssh-keygen -q -t ed25519 -N "" -f "$S/host_key"
ssh-keygen -q -t ed25519 -N "" -f "$S/client_key"
cp "$S/client_key.pub" "$S/authorized_keys"
sftp_port=$(free_port)
dav_port=$(free_port)
cat >"$S/sshd_config" <<EOF
ListenAddress 127.0.0.1:$sftp_port
HostKey $S/host_key
AuthorizedKeysFile $S/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $S/sshd.pid
Subsystem sftp internal-sftp
EOF
read -r kt key _ <"$S/host_key.pub"
echo "[127.0.0.1]:$sftp_port $kt $key" >"$S/known_hosts"
printf 'Host *\n  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  IdentityAgent none\n' \
  "$S/known_hosts" >"$S/ssh_config"
"$(command -v sshd || echo /usr/sbin/sshd)" -D -e -f "$S/sshd_config" >"$S/sshd.log" 2>&1 &
pids+=("$!")
wsgidav --host 127.0.0.1 --port "$dav_port" --auth anonymous -q --root "$W/root" >"$S/dav.log" 2>&1 &
pids+=("$!")
export ARC_SFTP_KEY=$S/client_key ARC_SSH_CONFIG=$S/ssh_config ARC_PASSWORD=bench
sleep 2

# One first backup of $SRC by $2 (labelled $1) to server $3 with packs of $4.
backup() {
  local label=$1 bin=$2 server=$3 size=$4 name url garage_pids=()
  name=$label-$server-$size
  case $server in
    sftp) url=sftp://root@127.0.0.1:$sftp_port$W/root/$name ;;
    webdav) url=webdav:http://127.0.0.1:$dav_port/$name ;;
    garage)
      (
        top=$W
        W=$W/garage
        # shellcheck source=tests/lib/garage.sh
        source "$ROOT/tests/lib/garage.sh"
        garage_cluster bench >/dev/null
        echo "${node_pid[*]} $(s3port 1)" >"$top/garage.env"
      )
      read -r -a garage_pids <"$W/garage.env"
      url=s3:http://127.0.0.1:${garage_pids[-1]}/bench/$name
      unset 'garage_pids[-1]'
      export AWS_ACCESS_KEY_ID=GK0123456789abcdef01234567 AWS_DEFAULT_REGION=garage
      export AWS_SECRET_ACCESS_KEY=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
      ;;
  esac
  XDG_CACHE_HOME=$W/cache "$bin" --repo "$url" init --pack-size "$size" >/dev/null
  XDG_CACHE_HOME=$W/cache /usr/bin/time -f '%M %e %U %S' -o "$W/time" "$bin" --repo "$url" backup "$SRC" >/dev/null
  local packs='-' left='-'
  if [[ $server != garage ]]; then
    packs=$(find "$W/root/$name/data" -type f | wc -l)
    left=$(find "$W/root/$name/tmp" -type f 2>/dev/null | wc -l)
  fi
  echo "$label $server $size $(cat "$W/time") load $(cut -d' ' -f1 /proc/loadavg) packs $packs tmp $left"
  rm -rf "${W:?}/root/$name" "$W/cache"
  if [[ $server == garage ]]; then
    kill -9 "${garage_pids[@]}" 2>/dev/null || true
    rm -rf "$W/garage" "$W/garage.env"
  fi
}

echo "label server pack_size peak_rss_kib wall user sys"
for _ in $(seq "$ROUNDS"); do
  for size in "${SIZES[@]}"; do
    for who in "$@"; do
      for server in "${SERVER_LIST[@]}"; do
        backup "${who%%=*}" "${who#*=}" "$server" "$size"
      done
    done
  done
done
