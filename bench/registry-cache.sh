#!/usr/bin/env bash
# Issue 17: a CI runner with an empty cache directory, building the real llm-env (python +
# torch 2.0.1 with its CUDA 11.7 wheels, transformers, datasets, … — ~2.3 GiB of wheels) from
# its lock and pushing to a registry whose cache repository already holds the environment
# (another runner built it with --cache-to). Measured: wall time of the empty-cache build, and
# the bytes the registry sent it (summed from docker-registry's access log), against the same
# build with no registry cache (the runner downloads and builds everything).
#
# Then one package bumped (transformers 4.36.2 -> 4.37.1, from a lock) on a fresh runner: with
# the registry cache (the environment is new, but every layer but transformers' comes from the
# cache's layer entries) against without it, alternating; wall, wheels downloaded, and the
# blobs uploaded.
#
#   bash bench/registry-cache.sh     (ROUNDS=N, default 3; BENCH_DIR=… as for bench/llm.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
bench_init
bench_need_inputs
work=/tmp/imgbuild-benchcache-$$
mkdir -p "$work"
start_registry "$work"
trap 'kill $registry_pid 2>/dev/null; rm -rf "$work"' EXIT
llm_spec "$work/env.yml" 4.36.2
llm_spec "$work/bumped.yml" 4.37.1
# The locks and the wheels come from the persistent bench cache (as bench/llm.sh's do).
"$bin" lock --spec "$work/env.yml" -o "$work/env.lock" --cache-dir "$bench/cache" -q
"$bin" lock --spec "$work/bumped.yml" -o "$work/bumped.lock" --cache-dir "$bench/cache" -q
flags=(--lock "$work/env.lock" --spec "$work/env.yml" --base scratch --push --insecure-registry "$reg")
# Runner A keeps the environment in the cache repository.
"$bin" build "${flags[@]}" --cache-dir "$bench/cache" --tag "$reg/ml/llm-env:a" --cache-to "$reg/ml/cache" -q > /dev/null
sent() {  # bytes the registry sent since line $1 of its log
  tail -n +"$1" "$work/registry.log" | grep -o 'http.response.written=[0-9]*' | cut -d= -f2 | awk '{s+=$1} END {print s+0}'
}
for round in $(seq "${ROUNDS:-3}"); do
  rm -rf "$work/empty"
  from=$(($(wc -l < "$work/registry.log") + 1))
  start=$(date +%s.%N)
  "$bin" build "${flags[@]}" --cache-dir "$work/empty" --tag "$reg/ml/llm-env:r$round" \
    --cache-from "$reg/ml/cache" > "$work/out.txt" 2> "$work/err.txt"
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  grep -q "environment taken from the registry cache" "$work/err.txt" || { cat "$work/err.txt"; exit 1; }
  printf 'empty cache, --cache-from   wall %6.2f s   registry sent %8d bytes   %s\n' "$wall" "$(sent "$from")" \
    "$(grep -o 'uploaded [0-9]* blobs ([0-9]* bytes)' "$work/out.txt")"
done
# For comparison, one runner with an empty cache directory and no registry cache: it downloads
# every wheel (from PyPI) and builds everything; its push finds the blobs already there.
rm -rf "$work/cold"
start=$(date +%s.%N)
"$bin" build "${flags[@]}" --cache-dir "$work/cold" --tag "$reg/ml/llm-env:cold" > "$work/out.txt" 2> "$work/err.txt"
wall=$(echo "$(date +%s.%N) - $start" | bc)
printf 'empty cache, no registry cache   wall %6.2f s   %s   %s\n' "$wall" \
  "$(grep -o 'downloaded [0-9]* wheels ([^)]*)' "$work/err.txt" | head -1)" \
  "$(grep -o 'uploaded [0-9]* blobs ([0-9]* bytes)' "$work/out.txt")"

# One package bumped, on fresh runners (each downloads every wheel from PyPI), alternating.
bumped=(--lock "$work/bumped.lock" --spec "$work/bumped.yml" --base scratch --push --insecure-registry "$reg")
for round in $(seq "${ROUNDS:-3}"); do
  for mode in cache none; do
    rm -rf "$work/fresh"
    extra=()
    [ "$mode" = cache ] && extra=(--cache-from "$reg/ml/cache")
    start=$(date +%s.%N)
    "$bin" build "${bumped[@]}" --cache-dir "$work/fresh" --tag "$reg/ml/llm-env:bump-$mode-$round" \
      "${extra[@]}" > "$work/out.txt" 2> "$work/err.txt" || { cat "$work/err.txt"; exit 1; }
    wall=$(echo "$(date +%s.%N) - $start" | bc)
    printf 'bumped, fresh runner, registry cache %-5s wall %6.2f s   %s   %s   %s\n' "$mode" "$wall" \
      "$(grep -o '[0-9]* layers taken from the registry cache' "$work/err.txt" || echo '0 layers taken from the registry cache')" \
      "$(grep -o 'downloaded [0-9]* wheels ([^)]*)' "$work/err.txt" | head -1)" \
      "$(grep -o 'uploaded [0-9]* blobs ([0-9]* bytes)' "$work/out.txt")"
  done
done
