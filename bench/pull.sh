#!/usr/bin/env bash
# Issue 19: what a node pays to go from "pull" to "running" — the real llm-env image (python +
# torch 2.0.1 with its CUDA 11.7 wheels, transformers, …; 61 wheels, ~4.7 GB installed, as
# bench/llm.sh builds it from its lock) written with each layer compression, pushed to a local
# docker-registry, then pulled into empty storage by podman (containers/storage, overlay or
# vfs as the machine allows) and by containerd (`ctr image pull`, which unpacks into its
# snapshotter: the path a Kubernetes node takes). Wall and CPU (user+sys of the puller and, for
# containerd, of the daemon) per pull, alternating the compressions in each round.
#
#   bash bench/pull.sh      (ROUNDS=N, default 2; LEVELS="gzip zstd:1 zstd:3 zstd:9" to choose;
#                            BENCH_DIR=… as for bench/llm.sh, whose inputs it needs)
#
# Loopback costs nothing, so these figures are decompression and unpacking; docs/benchmarks.md
# adds transfer at fleet bandwidths from the image sizes printed here.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
bench_init
bench_need_inputs
for tool in podman ctr containerd docker-registry; do
  command -v $tool >/dev/null || { echo "needs $tool (apt-get install podman containerd docker-registry)" >&2; exit 1; }
done
levels=(${LEVELS:-gzip zstd:1 zstd:3 zstd:9})
work=/tmp/imgbuild-benchpull-$$
mkdir -p "$work"
start_registry "$work"
containerd_pid=
cleanup() {
  kill $registry_pid 2>/dev/null || true
  [ -n "$containerd_pid" ] && kill $containerd_pid 2>/dev/null && wait $containerd_pid 2>/dev/null || true
  for d in "$work"/podman-*; do [ -d "$d" ] && podman --root "$d/root" --runroot "$d/run" system reset -f >/dev/null 2>&1; done
  umount -R "$work"/ctrd-* 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

llm_spec "$work/env.yml" 4.36.2
"$bin" lock --spec "$work/env.yml" -o "$work/env.lock" --cache-dir "$bench/cache" -q
echo "build (warm downloads, cold layer caches) and size per compression:"
for c in "${levels[@]}"; do
  name=${c/:/-}
  rm -rf "$bench/cache/layers" "$bench/cache/environments" "$bench/cache/blobs"
  start=$(date +%s.%N)
  "$bin" build --lock "$work/env.lock" --spec "$work/env.yml" --base "oci:$inputs/base:glibc" \
    --compression "$c" --cache-dir "$bench/cache" --tag "$reg/bench/llm-env:$name" --push \
    --insecure-registry "$reg" -q > /dev/null 2> "$work/build-$name.txt" || { cat "$work/build-$name.txt"; exit 1; }
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  size=$(python3 - "$work/registry" "$name" <<'PY'
import json, os, sys
root, tag = sys.argv[1], sys.argv[2]
repo = os.path.join(root, "docker/registry/v2/repositories/bench/llm-env/_manifests/tags", tag, "current/link")
digest = open(repo).read().strip().split(":")[1]
blob = lambda d: os.path.join(root, "docker/registry/v2/blobs/sha256", d[:2], d, "data")
m = json.load(open(blob(digest)))
print(sum(l["size"] for l in m["layers"]))
PY
)
  printf '  %-8s build %6.1f s   image %6.0f MiB\n' "$c" "$wall" "$(echo "$size / 1048576" | bc -l)"
done

# containerd with its own root, state and socket; the native snapshotter where overlayfs
# cannot be mounted (nested containers).
ctrd=$work/ctrd
mkdir -p "$ctrd"
cat > "$ctrd/config.toml" <<TOML
version = 2
root = "$ctrd/root"
state = "$ctrd/state"
[grpc]
  address = "$ctrd/sock"
[plugins."io.containerd.grpc.v1.cri"]
  disable_apparmor = true
TOML
containerd --config "$ctrd/config.toml" > "$ctrd/log" 2>&1 &
containerd_pid=$!
until ctr --address "$ctrd/sock" version >/dev/null 2>&1; do sleep 0.2; done
snapshotter=overlayfs
ctr --address "$ctrd/sock" plugins ls 2>/dev/null | grep -q 'overlayfs .*ok' || snapshotter=native

cpu_of() { awk '{print $14+$15+$16+$17}' "/proc/$1/stat"; }   # clock ticks, with children
tick=$(getconf CLK_TCK)
echo "pulls into empty storage (containerd snapshotter: $snapshotter):"
for round in $(seq "${ROUNDS:-2}"); do
  for c in "${levels[@]}"; do
    name=${c/:/-}
    ref=$reg/bench/llm-env:$name
    # podman
    p=$work/podman-$name-$round
    mkdir -p "$p"
    /usr/bin/time -f '%e %U %S' -o "$p/time" \
      podman --root "$p/root" --runroot "$p/run" pull -q --tls-verify=false "$ref" > /dev/null
    read -r pw pu ps < "$p/time"
    podman --root "$p/root" --runroot "$p/run" system reset -f >/dev/null 2>&1 || true
    rm -rf "$p"
    # containerd: the client's and the daemon's CPU
    before=$(cpu_of "$containerd_pid")
    /usr/bin/time -f '%e %U %S' -o "$work/ctr-time" \
      ctr --address "$ctrd/sock" -n "bench$round$name" images pull --plain-http \
        --snapshotter "$snapshotter" "$ref" > /dev/null
    after=$(cpu_of "$containerd_pid")
    read -r cw cu cs < "$work/ctr-time"
    dcpu=$(echo "($after - $before) / $tick" | bc -l)
    ctr --address "$ctrd/sock" -n "bench$round$name" images rm "$ref" > /dev/null 2>&1 || true
    ctr --address "$ctrd/sock" -n "bench$round$name" content ls -q 2>/dev/null \
      | xargs -r ctr --address "$ctrd/sock" -n "bench$round$name" content rm > /dev/null 2>&1 || true
    printf '  round %d  %-8s podman %6.1f s wall %6.1f s CPU   containerd %6.1f s wall %6.1f s CPU\n' \
      "$round" "$c" "$pw" "$(echo "$pu + $ps" | bc)" "$cw" "$(echo "$cu + $cs + $dcpu" | bc)"
  done
done
