#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 20 s each), seeded from the recorder's
# corpus of real SBCs' messages. Needs the nightly toolchain and cargo-fuzz (.ci/run installs
# both where missing). A crash fails the run and leaves its input in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-20}"
for target in sip_core framing bodies rtp; do
  mkdir -p "corpus/$target"
  cargo +nightly fuzz run "$target" "corpus/$target" ../recorder/tests/corpus -- \
    -max_total_time="$seconds" -rss_limit_mb=1024 -print_final_stats=1 2>&1 | tail -n 12
done
