#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from real repository data: the golden vectors
# (format-spec/vectors/*.hex) and the frozen repository
# format-spec/vectors/repo-v1 (its config, index files, snapshots, packs,
# and the frames and tree blobs inside the packs). Seeds are named by the
# sha1 of their bytes, as libFuzzer names its own inputs, so re-running is
# idempotent. Needs python3 and the zstd command line tool.
#
#   fuzz/seed.sh            # seeds into fuzz/corpus
#   fuzz/seed.sh DIR        # seeds into DIR/<target>
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/corpus}
exec python3 - "$here/../format-spec/vectors" "$out" <<'PY'
import hashlib, os, struct, subprocess, sys

vectors, out = sys.argv[1], sys.argv[2]
repo = os.path.join(vectors, "repo-v1")
MAX_SEED = 64 * 1024  # bigger inputs only slow the fuzzer down

def hexfile(name):
    text = open(os.path.join(vectors, name)).read()
    digits = "".join(line.split("#", 1)[0] for line in text.splitlines())
    return bytes.fromhex("".join(digits.split()))

def unzstd(b):
    return subprocess.run(["zstd", "-dc"], input=b, capture_output=True, check=True).stdout

def put(target, data, why):
    if len(data) > MAX_SEED:
        return
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)
    print(f"{target:13} {len(data):7} bytes  {os.path.relpath(why, vectors) if why.startswith('/') else why}")

def files(sub):
    d = os.path.join(repo, sub)
    for root, _, names in os.walk(d):
        for n in sorted(names):
            p = os.path.join(root, n)
            yield p, open(p, "rb").read()

def envelope_payload(env):
    stored = env[16:-32]
    return unzstd(stored) if env[6] == 1 else stored

def raw_envelope(ty, payload):
    # Checksum left zero: the fuzz entry points recompute it (fix_envelope).
    return b"ARCF" + bytes([ty, 1, 0, 0]) + struct.pack("<Q", len(payload)) + payload + bytes(32)

# Envelope files, as stored and (for the zstd index files) re-wrapped with
# the raw codec so mutations reach the payload parser directly.
for name, target in [("config.hex", "config"), ("envelope-snapshot.hex", "snapshot"),
                     ("lock.hex", "lock"), ("index-file.hex", "index_file")]:
    b = hexfile(name)
    put(target, b, name)
    put("envelope", b, name)
put("index_file", raw_envelope(2, hexfile("index-payload.hex")), "index-payload.hex, raw codec")
for path, b in files("config"):
    put("config", b, path); put("envelope", b, path)
for path, b in files("snapshots"):
    put("snapshot", b, path); put("envelope", b, path)
for path, b in files("index"):
    put("index_file", b, path); put("envelope", b, path)
    put("index_file", raw_envelope(2, envelope_payload(b)), path + ", raw codec")

# Trees: the golden vector and every tree blob in the frozen repository.
put("tree", hexfile("tree.hex"), "tree.hex")

# Trailer + footer; pack_trailer inputs are frames_end u64 || trailer || footer.
tf = hexfile("pack-trailer-footer.hex")
put("pack_trailer", struct.pack("<Q", 71308) + tf, "pack-trailer-footer.hex")

def packs():
    yield "pack-zstd.hex", hexfile("pack-zstd.hex")
    for path, b in files("data"):
        yield path, b

for path, p in packs():
    put("pack", p, path)
    (tlen,) = struct.unpack("<I", p[-8:-4])
    start = len(p) - 40 - tlen
    put("pack_trailer", struct.pack("<Q", start) + p[start:], path + " trailer+footer")
    t = p[start:-40]
    nf, nb = struct.unpack("<II", t[:8])
    frames = []
    for i in range(nf):
        off, sl, rl, codec = struct.unpack("<QIIB", t[8 + 24 * i:8 + 24 * i + 17])
        stored = p[off:off + sl]
        frames.append(unzstd(stored) if codec == 1 else stored)
        put("frame", bytes([codec]) + struct.pack("<I", rl) + stored, f"{path} frame {i}")
    for i in range(nb):
        rec = t[8 + 24 * nf + 48 * i:8 + 24 * nf + 48 * (i + 1)]
        kind, frame, off, rl = rec[32], *struct.unpack("<III", rec[36:48])
        if kind == 1:
            put("tree", frames[frame][off:off + rl], f"{path} tree blob {i}")
PY
