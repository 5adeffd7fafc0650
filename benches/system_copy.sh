#!/usr/bin/env bash
# benches/system_copy.sh DIR: a copy of this machine's /usr/share and /etc at DIR, made once (the
# "real system files" shape of benches/run.sh and benches/mount.sh). Kept as it is afterwards, so
# that runs compare the same files; delete DIR to take a new copy.
set -euo pipefail
DIR=${1:?usage: system_copy.sh DIR}
[[ -d $DIR ]] && exit 0
printf '[%s] %s\n' "$(date +%H:%M:%S)" "copying /usr/share and /etc to $DIR (real system files)" >&2
rm -rf "$DIR.tmp"
mkdir -p "$DIR.tmp"
cp -a /usr/share /etc "$DIR.tmp/"
mv "$DIR.tmp" "$DIR"
