#!/usr/bin/env bash
# Push benchmark: `imgbuild push` vs `skopeo copy oci:… docker://…` of the same OCI layout to
# local docker-registry instances, cold (empty registry) and warm (everything already there).
#
#   bench/push.sh [LAYER_MIB ...]        default: 300 100 100 1  (incompressible layers)
#
# Each tool gets its own fresh registry so neither warms the other's storage. Prints one line
# per run: tool, phase, wall seconds, CPU seconds (user+sys), peak RSS MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(300 100 100 1)

cargo build --release -q -p imgbuild
bin=$PWD/target/release/imgbuild
work=$(mktemp -d /tmp/imgbuild-bench-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

python3 - "$work/layout" "${sizes[@]}" <<'PY'
import hashlib, json, os, sys
out, sizes = sys.argv[1], [int(s) for s in sys.argv[2:]]
blobs = os.path.join(out, "blobs", "sha256"); os.makedirs(blobs)
def put(data):
    h = hashlib.sha256(data).hexdigest()
    open(os.path.join(blobs, h), "wb").write(data)
    return "sha256:" + h, len(data)
layers = []
for mib in sizes:
    d, n = put(os.urandom(mib << 20))
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})
cd, cn = put(json.dumps({"architecture": "amd64", "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode())
md, mn = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
    "layers": layers}).encode())
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "bench"}}]},
    open(os.path.join(out, "index.json"), "w"))
open(os.path.join(out, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
PY

start_registry() {  # $1 = name; prints host:port
  local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$work/$1"
  printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$work/$1/data" "$port" > "$work/$1/config.yml"
  docker-registry serve "$work/$1/config.yml" >"$work/$1/log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done
  echo "127.0.0.1:$port"
}

measure() {  # $1 = tool, $2 = phase, rest = command
  local tool=$1 phase=$2; shift 2
  python3 - "$tool" "$phase" "$@" <<'PY'
import resource, subprocess, sys, time
tool, phase, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
t = time.monotonic()
subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wall = time.monotonic() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{tool:9} {phase:5} wall {wall:6.2f} s   cpu {ru.ru_utime + ru.ru_stime:6.2f} s   peak RSS {ru.ru_maxrss / 1024:6.1f} MiB")
PY
}

total=$(du -sm "$work/layout/blobs" | cut -f1)
echo "image: ${#sizes[@]} layers (${sizes[*]} MiB, random bytes), ${total} MiB of blobs; $(nproc) cores"
a=$(start_registry imgbuild); b=$(start_registry skopeo)
measure imgbuild cold "$bin" push "$work/layout:bench" "$a/bench/app:1" --insecure-registry "$a"
measure imgbuild warm "$bin" push "$work/layout:bench" "$a/bench/app:1" --insecure-registry "$a"
measure skopeo cold skopeo copy -q --dest-tls-verify=false "oci:$work/layout:bench" "docker://$b/bench/app:1"
measure skopeo warm skopeo copy -q --dest-tls-verify=false "oci:$work/layout:bench" "docker://$b/bench/app:1"
