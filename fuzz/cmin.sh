#!/usr/bin/env bash
# Folds the new inputs of fuzz/run.sh (corpus-new/<target>, ignored) into
# the committed corpus (corpus/<target>), keeping only inputs that add
# coverage (libFuzzer -set_cover_merge=1: a smaller set than the -merge=1
# of `cargo fuzz cmin`), then puts the real-data seeds of seed.sh back so
# they stay in the regression suite whatever the merge picked.
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
    nice -n 10 "$bin/$t" -set_cover_merge=1 -max_len="$MAX_LEN" -rss_limit_mb=2048 "corpus-min/$t" "corpus/$t" "corpus-new/$t" \
        >"logs/cmin-$t.log" 2>&1
    before=$(find "corpus/$t" "corpus-new/$t" -type f | wc -l)
    rm -rf "corpus/$t" && mv "corpus-min/$t" "corpus/$t"
    printf '%-13s %6d inputs -> %5d  (%s)\n' "$t" "$before" "$(find "corpus/$t" -type f | wc -l)" \
        "$(du -sh "corpus/$t" | cut -f1)"
done
rmdir corpus-min 2>/dev/null || true
./seed.sh "$here/corpus" >/dev/null
