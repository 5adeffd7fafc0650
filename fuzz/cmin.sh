#!/usr/bin/env bash
# Folds the new inputs of fuzz/run.sh (corpus-new/<target>, ignored) into
# the committed corpus (corpus/<target>), keeping only inputs that add
# coverage (libFuzzer -merge=1, what `cargo fuzz cmin` does). Inputs larger
# than MAX_LEN bytes are dropped to keep the corpus small in git.
#
#   fuzz/cmin.sh                # every target
#   fuzz/cmin.sh tree pack      # chosen targets
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
MAX_LEN=${MAX_LEN:-8192}
all=(envelope config snapshot lock index_file tree pack_trailer pack frame)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
nice -n 10 cargo +nightly fuzz build -s none -a
bin=target/x86_64-unknown-linux-gnu/release
for t in "${targets[@]}"; do
    rm -rf "corpus-min/$t"
    mkdir -p "corpus-min/$t" "corpus-new/$t"
    nice -n 10 "$bin/$t" -merge=1 -max_len="$MAX_LEN" -rss_limit_mb=2048 "corpus-min/$t" "corpus/$t" "corpus-new/$t" \
        >"logs/cmin-$t.log" 2>&1
    before=$(find "corpus/$t" "corpus-new/$t" -type f | wc -l)
    rm -rf "corpus/$t" && mv "corpus-min/$t" "corpus/$t"
    printf '%-13s %6d inputs -> %5d  (%s)\n' "$t" "$before" "$(find "corpus/$t" -type f | wc -l)" \
        "$(du -sh "corpus/$t" | cut -f1)"
done
rmdir corpus-min 2>/dev/null || true
