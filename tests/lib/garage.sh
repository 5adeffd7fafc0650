# A 3-node Garage cluster (replication factor 3) on free loopback ports,
# for tests/distributed.sh and benches/remote.sh. Source it after setting
#   G     the garage binary
#   W     a scratch directory (the nodes' data goes under $W/n1..n3)
#   pids  an array the caller kills on exit (node processes are added)
# then call `garage_cluster BUCKET`. Afterwards: s3port/rpcport/adminport N,
# gc N ARGS... (the garage CLI against node N), start_node N, stop_node N,
# GARAGE_KEY / GARAGE_SECRET (an access key allowed on BUCKET), and
# GARAGE_REGION. Failures go through `fail`, which the caller defines.

# Nine free loopback ports (S3, RPC, admin for each node).
read -r -a garage_ports <<<"$(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(9)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)"
s3port() { echo "${garage_ports[$((($1 - 1) * 3))]}"; }
rpcport() { echo "${garage_ports[$((($1 - 1) * 3 + 1))]}"; }
adminport() { echo "${garage_ports[$((($1 - 1) * 3 + 2))]}"; }
GARAGE_KEY=GK0123456789abcdef01234567
GARAGE_SECRET=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
GARAGE_REGION=garage

gc() { local n=$1; shift; "$G" -c "$W/n$n/garage.toml" "$@"; }
node_pid=()
start_node() {
  # The binary itself in the background (not the gc function, whose
  # subshell a kill would leave the server running behind).
  "$G" -c "$W/n$1/garage.toml" server >>"$W/n$1/server.log" 2>&1 &
  node_pid[$1]=$!
  pids+=("$!")
}
stop_node() {
  kill -9 "${node_pid[$1]}" 2>/dev/null || true
  wait "${node_pid[$1]}" 2>/dev/null || true
}

garage_cluster() { # bucket
  local rpc_secret i
  rpc_secret=$(head -c32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  for i in 1 2 3; do
    mkdir -p "$W/n$i"
    cat >"$W/n$i/garage.toml" <<TOML
metadata_dir = "$W/n$i/meta"
data_dir = "$W/n$i/data"
db_engine = "sqlite"
metadata_fsync = false
data_fsync = false
replication_factor = 3
rpc_bind_addr = "127.0.0.1:$(rpcport $i)"
rpc_public_addr = "127.0.0.1:$(rpcport $i)"
rpc_secret = "$rpc_secret"
[s3_api]
s3_region = "$GARAGE_REGION"
api_bind_addr = "127.0.0.1:$(s3port $i)"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$(adminport $i)"
admin_token = "arc-ci-admin"
TOML
    chmod 600 "$W/n$i/garage.toml"
  done
  for i in 1 2 3; do start_node $i; done
  for i in 1 2 3; do
    for _ in $(seq 150); do gc $i status >/dev/null 2>&1 && break; sleep 0.2; done
    gc $i status >/dev/null 2>&1 || fail "Garage node $i did not start: $(tail -5 "$W/n$i/server.log")"
  done
  for i in 2 3; do gc 1 node connect "$(gc $i node id -q)" >/dev/null; done
  for i in 1 2 3; do gc 1 layout assign -z "dc$i" -c 1G "$(gc $i node id -q | cut -c1-64)" >/dev/null; done
  gc 1 layout apply --version 1 >/dev/null
  gc 1 key import "$GARAGE_KEY" "$GARAGE_SECRET" -n arc-ci --yes >/dev/null
  garage_bucket "$1"
}

garage_bucket() { # bucket
  gc 1 bucket create "$1" >/dev/null
  gc 1 bucket allow --read --write --owner "$1" --key arc-ci >/dev/null
}
