#!/usr/bin/env bash
# Package extraction (issue 14): a build with an empty package cache, so every package of the
# ~1 GiB CUDA/pytorch-shaped benchmark channel (ELF bytes; tests/it/bench_channel.rs) is read,
# checked and extracted, then linked and layered. Two imgbuild binaries side by side,
# alternating rounds: OLD (rattler_package_streaming's extraction) and NEW (imgbuild's checked
# extraction, hashing every file for paths.json).
#   OLD=/path/to/old/imgbuild NEW=target/release/imgbuild ROUNDS=3 bash bench/extract.sh
set -euo pipefail
cd "$(dirname "$0")/.."
chan=${CHANNEL:-$PWD/target/bench-channel-elf}
old=${OLD:?the binary to compare against}; new=${NEW:-target/release/imgbuild}
rounds=${ROUNDS:-3}
work=$(mktemp -d /tmp/imgbuild-benchextract-XXXXXX)
trap 'rm -rf "$work"' EXIT
small() { for i in $(seq -f %03g "$1" "$2"); do echo "small$i"; done; }
# shellcheck disable=SC2046
{ echo "channels: [\"file://$chan\"]"; echo "dependencies:"; printf '  - %s\n' torchsim cudasim cudnnsim mklsim $(small 0 199); } > "$work/a.yml"
run() {  # $1 = label, $2 = binary
  rm -rf "$work/cache" "$work/out"
  local t0 t1
  t0=$(date +%s.%N)
  "$2" build --spec "$work/a.yml" --base scratch --cache-dir "$work/cache" --output "$work/out" -q >/dev/null
  t1=$(date +%s.%N)
  digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$work/out/index.json")
  printf '%s %.2f %s\n' "$1" "$(echo "$t1 - $t0" | bc)" "$digest"
}
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then run old "$old"; run new "$new"; else run new "$new"; run old "$old"; fi
done | tee "$work/results"
python3 - "$work/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
old = [float(t) for k, t, _ in rows if k == "old"]; new = [float(t) for k, t, _ in rows if k == "new"]
print(f"median old {statistics.median(old):.2f} s, new {statistics.median(new):.2f} s, "
      f"per-round new/old {[round(n / o, 2) for n, o in zip(new, old)]}, "
      f"digests {'identical' if len({d for *_, d in rows}) == 1 else 'DIFFER'}")
PY
