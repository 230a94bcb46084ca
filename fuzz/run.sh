#!/usr/bin/env bash
# Fuzzes the spec and lock parsers (cargo fuzz, nightly). Seeds: the bundled examples and the
# real environment and lock files in ../shared/data. New inputs go to target/fuzz-corpus.
#   bash fuzz/run.sh          30 s per target (what .ci/run does)
#   bash fuzz/run.sh 3600     an hour per target
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
command -v cargo-fuzz >/dev/null || cargo install -q --locked cargo-fuzz
for target in parse_spec parse_lock; do
  corpus=target/fuzz-corpus/$target
  mkdir -p "$corpus"
  case $target in
    parse_spec) seeds=(examples/quickstart examples/llm-env ../shared/data/envs) ;;
    parse_lock) seeds=(../shared/data/locks) ;;
  esac
  # -rss_limit_mb: a parser that allocates without bound fails here; -timeout: one that hangs.
  cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=1048576 2>&1 | tail -4
done
