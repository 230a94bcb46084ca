#!/usr/bin/env bash
# The real workload (issue 13): python + the pip section of an LLM environment — torch 2.0.1
# with its CUDA 11.7 wheels, torchdata, transformers, datasets, accelerate; ~2.3 GiB of wheels
# from PyPI, ~4.7 GB installed — built on a base with glibc and libstdc++, by imgbuild and by
# the two do-it-yourself scripts a team would otherwise write:
#   py-rattler installs python, `uv pip install --require-hashes --link-mode copy` the same
#   wheels (the ones imgbuild's lock names), then `umoci insert` / `buildah copy + commit` into
#   the same base.
# Downloads are warm for everyone (wheels fetched once into a persistent cache; each tool's own
# cache kept between rounds); layer caches are cold for imgbuild's full builds.
#
#   bash bench/llm.sh     (ROUNDS=N alternating full builds, default 3; BENCH_DIR=… for the
#                          persistent caches, default ~/.cache/imgbuild-bench; needs PyPI once)
#
# Then: imgbuild's no-op rebuild (from the spec, which asks PyPI again, and from the lock), one
# small pip package bumped (transformers 4.36.2 -> 4.37.0), and the image sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh   # llm_spec
root=$PWD
cargo build --release -q -p imgbuild
bin=$root/target/release/imgbuild
py=${IMGBUILD_ORACLE_PYTHON:-$root/target/oracle-venv/bin/python}
uv=${IMGBUILD_UV:-$root/target/oracle-venv/bin/uv}
"$py" -c 'import rattler' || { echo "needs py-rattler: run .ci/run once, or set IMGBUILD_ORACLE_PYTHON" >&2; exit 1; }
"$uv" --version >/dev/null || { echo "needs uv: run .ci/run once, or set IMGBUILD_UV" >&2; exit 1; }
for tool in buildah umoci; do command -v $tool >/dev/null || { echo "needs $tool (apt-get install $tool)" >&2; exit 1; }; done
export IMGBUILD_UV=$uv

bench=${BENCH_DIR:-$HOME/.cache/imgbuild-bench}
inputs=$bench/inputs
if [ ! -f "$inputs/python" ]; then
  echo "packaging this machine's python and a glibc+libstdc++ base into $inputs (once)..."
  IMGBUILD_BENCH_LLM=$inputs cargo test -q -p imgbuild --test it -- --ignored generate_llm_bench_inputs
fi
pyver=$(cat "$inputs/python")
cache=$bench/cache            # imgbuild's: conda packages, wheels, uv's unpacked wheels
# Lower-case paths only: buildah and podman name `oci:` images after their path.
work=/tmp/imgbuild-benchllm-$$
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
cp -r "$inputs/base" "$work/base"
base=$work/base

llm_spec "$work/env.yml" 4.36.2
llm_spec "$work/env-bumped.yml" 4.37.0
llm_spec "$work/env-bumped2.yml" 4.37.1

measure() {  # $1 = label, $2 = image dir (OCI layout) or -, rest = command
  python3 "$root/bench/measure.py" "$@"
}
export RESULTS=$work/results.jsonl

# The wheels imgbuild chose, as the peers' requirements (name @ URL --hash), from its lock.
"$bin" lock --spec "$work/env.yml" -o "$work/env.lock" --cache-dir "$cache" -q
"$bin" lock --spec "$work/env-bumped2.yml" -o "$work/env-bumped2.lock" --cache-dir "$cache" -q
python3 - "$work/env.lock" > "$work/requirements.txt" <<'PY'
import sys
url = None
for line in open(sys.argv[1]):
    if line.startswith("- pypi: "):
        url = line.split(": ", 1)[1].strip()
    elif url and line.startswith("  name: "):
        name = line.split(": ", 1)[1].strip()
    elif url and line.startswith("  sha256: "):
        print(f"{name} @ {url} --hash=sha256:{line.split(': ', 1)[1].strip()}")
        url = None
PY
echo "environment: python $pyver + $(wc -l < "$work/requirements.txt") wheels; $(nproc) cores"

cat > "$work/install.py" <<PY
import asyncio, sys, rattler
async def main(target):
    vps = [rattler.GenericVirtualPackage(rattler.PackageName(n), rattler.Version(v), rattler.BuildString(b))
           for n, v, b in [("__unix", "0", "0"), ("__linux", "5.10", "0"), ("__glibc", "2.28", "0")]]
    records = await rattler.solve([rattler.Channel("file://$inputs/channel")], ["python=$pyver"],
                                  platforms=["linux-64", "noarch"], virtual_packages=vps)
    await rattler.install(records, target, cache_dir="$bench/py-cache", platform=rattler.Platform("linux-64"),
                          execute_link_scripts=False, show_progress=False, alternative_target_prefix="/opt/conda")
asyncio.run(main(sys.argv[1]))
PY
# Both peers: python by py-rattler, the wheels by uv (its own warm cache), into one tree.
cat > "$work/env.sh" <<SH
set -e
"$py" "$work/install.py" "\$1/env"
"$uv" pip install --no-config --cache-dir "$bench/peer-uv" --python-version $pyver \
  --python-platform x86_64-manylinux_2_28 --only-binary :all: --no-deps --require-hashes \
  --link-mode copy --quiet --target "\$1/env/lib/python$pyver/site-packages" -r "$work/requirements.txt"
SH
cat > "$work/umoci.sh" <<SH
set -e
bash "$work/env.sh" "\$1"
cp -r "$base" "\$1/image"
umoci insert --image "\$1/image:glibc" "\$1/env" /opt/conda
SH
cat > "$work/buildah.sh" <<SH
set -e
bash "$work/env.sh" "\$1"
b="buildah --storage-driver vfs --root \$1/storage --runroot \$1/run"
ctr=\$(\$b from --quiet "oci:$base:glibc")
\$b copy "\$ctr" "\$1/env" /opt/conda >/dev/null
\$b commit --quiet --timestamp 0 --disable-compression=false "\$ctr" "oci:\$1/image:bench" >/dev/null
SH

# Warm every download cache (not measured).
"$bin" build --spec "$work/env.yml" --base "oci:$base:glibc" --cache-dir "$cache" --output "$work/warmup" -q
mkdir -p "$work/warm" && bash "$work/env.sh" "$work/warm" && rm -rf "$work/warm" "$work/warmup"
cold_layers() { rm -rf "$cache/layers" "$cache/environments" "$cache/blobs" "$cache/staging"; }

rounds=${ROUNDS:-3}
for round in $(seq "$rounds"); do
  cold_layers
  rm -rf "$work/img"
  measure "imgbuild build" "$work/img" "$bin" build --spec "$work/env.yml" --base "oci:$base:glibc" --cache-dir "$cache" --output "$work/img"
  rm -rf "$work/umoci" && mkdir -p "$work/umoci"
  measure "py-rattler + uv + umoci insert" "$work/umoci/image" bash "$work/umoci.sh" "$work/umoci"
  rm -rf "$work/umoci"
  rm -rf "$work/buildah" && mkdir -p "$work/buildah"
  measure "py-rattler + uv + buildah commit" "$work/buildah/image" bash "$work/buildah.sh" "$work/buildah"
  rm -rf "$work/buildah"
done
measure "imgbuild no-op rebuild (spec)" "$work/img-noop" "$bin" build --spec "$work/env.yml" --base "oci:$base:glibc" --cache-dir "$cache" --output "$work/img-noop"
measure "imgbuild no-op rebuild (lock)" "$work/img-noop-lock" "$bin" build --lock "$work/env.lock" --base "oci:$base:glibc" --cache-dir "$cache" --output "$work/img-noop-lock"
measure "imgbuild transformers bumped" "$work/img-bumped" "$bin" build --spec "$work/env-bumped.yml" --base "oci:$base:glibc" --cache-dir "$cache" --output "$work/img-bumped"
# The same kind of bump (4.36.2 -> 4.37.1, not built before) from a lock: no resolve.
measure "imgbuild transformers bumped (lock)" "$work/img-bumped-lock" "$bin" build --lock "$work/env-bumped2.lock" --base "oci:$base:glibc" --cache-dir "$cache" --output "$work/img-bumped-lock"

python3 - "$work" <<'PY'
import json, os, statistics, sys
work = sys.argv[1]
runs = [json.loads(l) for l in open(os.path.join(work, "results.jsonl"))]
def walls(label):
    return [r["wall"] for r in runs if r["label"] == label]
ours = walls("imgbuild build (gzip)")
for peer in ("py-rattler + uv + umoci insert", "py-rattler + uv + buildah commit"):
    theirs = walls(peer)
    ratios = [a / b for a, b in zip(ours, theirs)]
    print(f"full build vs {peer}, median of {len(ours)}: imgbuild {statistics.median(ours):.1f} s, "
          f"peer {statistics.median(theirs):.1f} s; ratio per round {' '.join(f'{r:.2f}' for r in ratios)} "
          f"(median {statistics.median(ratios):.2f})")
def layers(image):
    index = json.load(open(os.path.join(work, image, "index.json")))
    blob = lambda d: os.path.join(work, image, "blobs", *d.split(":"))
    m = json.load(open(blob(index["manifests"][0]["digest"])))
    return index["manifests"][0]["digest"], [(l["digest"], l["size"]) for l in m["layers"]]
(d_full, full), (d_noop, _), (d_lock, _), (_, bumped) = (layers(x) for x in ("img", "img-noop", "img-noop-lock", "img-bumped"))
print(f"no-op rebuilds give the full build's digest: spec {d_noop == d_full}, lock {d_lock == d_full}")
changed = [(d, s) for d, s in bumped if d not in dict(full)]
bump = walls("imgbuild transformers bumped")[0]
print(f"transformers bumped: {len(changed)} of {len(bumped)} layers new ({sum(s for _, s in changed) / 2**20:.1f} MiB), "
      f"{bump:.1f} s = {100 * bump / statistics.median(ours):.1f}% of a full build")
bump = walls("imgbuild transformers bumped (lock)")[0]
print(f"transformers bumped from a lock: {bump:.1f} s = {100 * bump / statistics.median(ours):.1f}% of a full build")
PY
