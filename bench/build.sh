#!/usr/bin/env bash
# Build benchmark (issue 5): `imgbuild build` to an OCI layout vs the two do-it-yourself paths a
# team would otherwise script — py-rattler install + `buildah from scratch/copy/commit`, and
# py-rattler install + `umoci insert` — on the same ~1 GiB CUDA/pytorch-shaped environment
# (generated channel: tests/it/bench_channel.rs), package caches warm. Then imgbuild's no-op
# rebuild, one small package upgraded, a second environment sharing the big packages, and
# gzip vs zstd.
#
#   bash bench/build.sh          (ROUNDS=N: full builds of imgbuild and umoci, alternating; default 3)
#   BYTES=elf bash bench/build.sh   the big packages' "library" bytes are real shared libraries
#                                (this machine's /usr/lib/x86_64-linux-gnu/*.so*, ~50% with gzip)
#                                instead of random bytes (stored, not compressed: flattering)
#
# Prints one line per run: what, wall seconds, CPU seconds (user+sys of all children), peak
# RSS MiB, image size (sum of compressed layer blobs).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cargo build --release -q -p imgbuild
bin=$root/target/release/imgbuild
bytes=${BYTES:-random}
case $bytes in
  random) chan=$root/target/bench-channel ;;
  elf) chan=$root/target/bench-channel-elf ;;
  *) echo "BYTES=$bytes: use random or elf" >&2; exit 1 ;;
esac
if [ ! -f "$chan/linux-64/repodata.json" ]; then
  echo "generating the benchmark channel in $chan (once, a few minutes)..."
  IMGBUILD_BENCH_BYTES=$bytes IMGBUILD_BENCH_CHANNEL=$chan cargo test -q -p imgbuild --test it -- --ignored generate_bench_channel
fi
py=${IMGBUILD_ORACLE_PYTHON:-$root/target/oracle-venv/bin/python}
"$py" -c 'import rattler' || { echo "needs py-rattler: run .ci/run once, or set IMGBUILD_ORACLE_PYTHON" >&2; exit 1; }
for tool in buildah umoci; do command -v $tool >/dev/null || { echo "needs $tool (apt-get install $tool)" >&2; exit 1; }; done

work=$(mktemp -d /tmp/imgbuild-benchbuild-XXXXXX)
trap 'rm -rf "$work"' EXIT
cache=$work/imgbuild-cache

spec() {  # $1 = file, rest = dependencies
  local f=$1; shift
  { echo "channels: [\"file://$chan\"]"; echo "dependencies:"; printf '  - %s\n' "$@"; } > "$f"
}
small() { for i in $(seq -f %03g "$1" "$2"); do echo "small$i"; done; }
# shellcheck disable=SC2046
spec "$work/a.yml" torchsim cudasim cudnnsim mklsim $(small 0 6) "small007 ==1.0" $(small 8 199)
# shellcheck disable=SC2046
spec "$work/a-upgraded.yml" torchsim cudasim cudnnsim mklsim $(small 0 6) "small007 ==2.0" $(small 8 199)
# shellcheck disable=SC2046
spec "$work/b.yml" torchsim cudasim cudnnsim $(small 100 199)

measure() {  # $1 = label, $2 = image dir (OCI layout) or -, rest = command
  python3 "$root/bench/measure.py" "$@"
}
export RESULTS=$work/results.jsonl

# py-rattler: solve + install into a directory, relocated to /opt/conda (like imgbuild's staging).
cat > "$work/install.py" <<PY
import asyncio, sys, rattler
async def main(spec_deps, target):
    vps = [rattler.GenericVirtualPackage(rattler.PackageName(n), rattler.Version(v), rattler.BuildString(b))
           for n, v, b in [("__unix", "0", "0"), ("__linux", "5.10", "0"), ("__glibc", "2.28", "0")]]
    records = await rattler.solve([rattler.Channel("file://$chan")], spec_deps, platforms=["linux-64", "noarch"], virtual_packages=vps)
    await rattler.install(records, target, cache_dir="$work/py-cache", platform=rattler.Platform("linux-64"),
                          execute_link_scripts=False, show_progress=False, alternative_target_prefix="/opt/conda")
deps = [l[4:].strip() for l in open(sys.argv[1]) if l.startswith("  - ")]
asyncio.run(main(deps, sys.argv[2]))
PY
cat > "$work/buildah.sh" <<SH
set -e
"$py" "$work/install.py" "$work/a.yml" "\$1/env"
b="buildah --storage-driver vfs --root \$1/storage --runroot \$1/run"
ctr=\$(\$b from scratch)
\$b copy "\$ctr" "\$1/env" /opt/conda >/dev/null
\$b commit --quiet --timestamp 0 --disable-compression=false "\$ctr" "oci:\$1/image:bench" >/dev/null
SH
cat > "$work/umoci.sh" <<SH
set -e
"$py" "$work/install.py" "$work/a.yml" "\$1/env"
umoci init --layout "\$1/image"
umoci new --image "\$1/image:bench"
umoci insert --image "\$1/image:bench" "\$1/env" /opt/conda
SH

echo "environment: $(grep -c '^  - ' "$work/a.yml") packages from $chan; $(nproc) cores"
# Warm every package cache (not measured).
"$bin" build --spec "$work/a.yml" --base scratch --cache-dir "$cache" --output "$work/warmup" -q >/dev/null 2>&1
"$py" "$work/install.py" "$work/a.yml" "$work/warm-env" && rm -rf "$work/warm-env" "$work/warmup"
# A full build starts with only the package cache: no layers, environments, blobs, and no
# staging root to update in place.
cold_layers() { rm -rf "$cache/layers" "$cache/environments" "$cache/blobs" "$cache/staging"; }

# Full builds: imgbuild and the faster peer alternate for $ROUNDS rounds (this machine's
# neighbours come and go; a ratio within one round compares like with like), buildah once.
rounds=${ROUNDS:-3}
for round in $(seq "$rounds"); do
  cold_layers
  rm -rf "$work/img-gzip"
  measure "imgbuild build (gzip)" "$work/img-gzip" "$bin" build --spec "$work/a.yml" --base scratch --cache-dir "$cache" --output "$work/img-gzip"
  rm -rf "$work/umoci" && mkdir -p "$work/umoci"
  measure "py-rattler + umoci insert (gzip)" "$work/umoci/image" bash "$work/umoci.sh" "$work/umoci"
done
mkdir -p "$work/buildah"
measure "py-rattler + buildah commit (gzip)" "$work/buildah/image" bash "$work/buildah.sh" "$work/buildah"
measure "imgbuild no-op rebuild" "$work/img-noop" "$bin" build --spec "$work/a.yml" --base scratch --cache-dir "$cache" --output "$work/img-noop"
measure "imgbuild one small package upgraded" "$work/img-up" "$bin" build --spec "$work/a-upgraded.yml" --base scratch --cache-dir "$cache" --output "$work/img-up"
measure "imgbuild second env (shares big pkgs)" "$work/img-b" "$bin" build --spec "$work/b.yml" --base scratch --cache-dir "$cache" --output "$work/img-b"
cold_layers
measure "imgbuild build (zstd)" "$work/img-zstd" "$bin" build --spec "$work/a.yml" --base scratch --cache-dir "$cache" --output "$work/img-zstd" --compression zstd

python3 - "$work" <<'PY'
import json, os, statistics, sys
work = sys.argv[1]
runs = [json.loads(l) for l in open(os.path.join(work, "results.jsonl"))]
ours = [r["wall"] for r in runs if r["label"] == "imgbuild build (gzip)"]
umoci = [r["wall"] for r in runs if r["label"] == "py-rattler + umoci insert (gzip)"]
ratios = [a / b for a, b in zip(ours, umoci)]
print(f"full build, median of {len(ours)}: imgbuild {statistics.median(ours):.2f} s, umoci {statistics.median(umoci):.2f} s; "
      f"ratio per round {' '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})")
def layers(image):
    index = json.load(open(os.path.join(work, image, "index.json")))
    blob = lambda d: os.path.join(work, image, "blobs", *d.split(":"))
    m = json.load(open(blob(index["manifests"][0]["digest"])))
    return [(l["digest"], l["size"]) for l in m["layers"]]
full, noop, up, b = (layers(x) for x in ("img-gzip", "img-noop", "img-up", "img-b"))
print(f"no-op rebuild: identical manifest layers: {full == noop}")
changed = [d for d in up if d not in full]
print(f"upgrade: {len(changed)} of {len(up)} layers changed ({sum(s for _, s in changed) / 2**20:.1f} MiB to push)")
shared = [(d, s) for d, s in b if d in dict(full)]
print(f"second env: {len(shared)} of {len(b)} layers shared with the first, {sum(s for _, s in shared) / 2**20:.1f} MiB stored once")
PY
