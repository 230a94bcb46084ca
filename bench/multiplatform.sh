#!/usr/bin/env bash
# Issue 16: one two-platform build (linux/amd64 + linux/arm64, an image index) against two
# single-platform builds of the same spec, one after the other, on this x86_64 host. The
# environment: this machine's python (packaged for linux-64 and linux-aarch64 by the llm
# bench's input generator) + numpy, pandas, pyarrow and transformers from PyPI — binary wheels
# for each platform (~180 MB of wheels per platform) and pure-Python ones shared by both.
# Downloads are warm (fetched once, not measured); layer caches are cold in every round.
#
#   bash bench/multiplatform.sh     (ROUNDS=N alternating rounds, default 3; BENCH_DIR=… as
#                                    for bench/llm.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cargo build --release -q -p imgbuild
bin=$root/target/release/imgbuild
export IMGBUILD_UV=${IMGBUILD_UV:-$root/target/oracle-venv/bin/uv}
bench=${BENCH_DIR:-$HOME/.cache/imgbuild-bench}
inputs=$bench/inputs
if [ ! -f "$inputs/python" ]; then
  echo "packaging this machine's python into $inputs (once)..."
  IMGBUILD_BENCH_LLM=$inputs cargo test -q -p imgbuild --test it -- --ignored generate_llm_bench_inputs
fi
pyver=$(cat "$inputs/python")
cache=$bench/multi-cache
work=/tmp/imgbuild-benchmulti-$$
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
cat > "$work/env.yml" <<YML
name: multi-env
channels: ["file://$inputs/channel"]
dependencies:
  - python=$pyver
  - pip:
    - numpy==1.26.4
    - pandas==2.1.4
    - pyarrow==14.0.2
    - transformers==4.36.2
YML
export RESULTS=$work/results.jsonl
measure() { python3 "$root/bench/measure.py" "$@"; }
build() {  # $1 = output, rest = platforms
  local out=$1; shift
  local flags=()
  for p in "$@"; do flags+=(--platform "$p"); done
  "$bin" build --spec "$work/env.yml" --base scratch --cache-dir "$cache" --output "$out" -q "${flags[@]}"
}
export -f build; export bin work cache
cold() { rm -rf "$cache/layers" "$cache/environments" "$cache/blobs" "$cache/staging"; }

# Warm the downloads (not measured).
build "$work/warm" linux/amd64 linux/arm64 >/dev/null && rm -rf "$work/warm"

rounds=${ROUNDS:-3}
for round in $(seq "$rounds"); do
  for order in $( [ $((round % 2)) = 1 ] && echo "index pair" || echo "pair index"); do
    cold; rm -rf "$work/img" "$work/amd" "$work/arm"
    if [ "$order" = index ]; then
      measure "one build, two platforms (index)" - bash -c 'build "$work/img" linux/amd64 linux/arm64'
    else
      measure "two single-platform builds" - bash -c 'build "$work/amd" linux/amd64 && build "$work/arm" linux/arm64'
    fi
  done
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
one = [r["wall"] for r in rows if r["label"].startswith("one")]
two = [r["wall"] for r in rows if r["label"].startswith("two")]
print(f"median wall: index build {statistics.median(one):.2f} s, two builds {statistics.median(two):.2f} s")
print("per-round ratio (index / two builds):", ", ".join(f"{a / b:.2f}" for a, b in zip(one, two)))
PY
