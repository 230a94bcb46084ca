# Shared by the benchmarks of the real llm-env (bench/llm.sh, registry-cache.sh, pull.sh):
# sourced from the repository root, not run.

# The release binary ($bin), uv ($IMGBUILD_UV), the persistent bench caches ($bench) and the
# inputs bench/llm.sh makes once ($inputs: python packaged as a conda channel, a glibc base).
bench_init() {
  root=$PWD
  cargo build --release -q -p imgbuild
  bin=$root/target/release/imgbuild
  export IMGBUILD_UV=${IMGBUILD_UV:-$root/target/oracle-venv/bin/uv}
  bench=${BENCH_DIR:-$HOME/.cache/imgbuild-bench}
  inputs=$bench/inputs
}

# Fails unless bench/llm.sh has made the inputs; sets $pyver.
bench_need_inputs() {
  [ -f "$inputs/python" ] || { echo "run bench/llm.sh once first (it makes $inputs)" >&2; exit 1; }
  pyver=$(cat "$inputs/python")
}

# llm_spec FILE TRANSFORMERS_VERSION: the llm-env environment.yml (python + torch 2.0.1 with its
# CUDA 11.7 wheels, torchdata, transformers, datasets, accelerate, numpy, pyarrow, pandas).
llm_spec() {
  cat > "$1" <<YML
name: llm-env
channels: ["file://$inputs/channel"]
dependencies:
  - python=$pyver
  - pip:
    - torch==2.0.1
    - torchdata==0.6.1
    - transformers==$2
    - datasets==2.16.1
    - accelerate==0.25.0
    - numpy==1.26.4
    - pyarrow==14.0.2
    - pandas==2.1.4
YML
}

# start_registry DIR: a docker-registry on a free loopback port, storage and access log
# ($DIR/registry.log) in DIR, deletes enabled; sets $reg (127.0.0.1:PORT) and $registry_pid.
start_registry() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  reg=127.0.0.1:$port
  cat > "$1/registry.yml" <<YML
version: 0.1
log: {level: info, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $1/registry}, delete: {enabled: true}}
http: {addr: $reg}
YML
  docker-registry serve "$1/registry.yml" > "$1/registry.log" 2>&1 &
  registry_pid=$!
  until (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do sleep 0.1; done
}
