//! End-to-end tests: the real `imgbuild` binary against a conda channel that the suite builds
//! and serves on 127.0.0.1, checked with skopeo, umoci and podman. One test binary, so the
//! workspace links once.

mod bench_channel;
mod bench_llm;
mod build;
mod build_base;
mod build_caches;
mod build_config;
mod build_repro;
mod build_target;
mod ci_examples;
mod common;
mod concurrent;
mod crash;
mod errors;
mod hostile;
mod inspect;
mod lock;
mod multiplatform;
mod oracle;
mod pip;
mod pipeline;
mod push;
mod quickstart;
mod realpkgs;
mod registry_cache;
mod sbom;
mod snapshots;
mod wheels;
