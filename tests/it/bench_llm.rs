//! The inputs of `bench/llm.sh`: this machine's CPython packaged as a conda channel (no conda
//! channel is reachable here) and a base image with glibc and the libraries torch's wheels
//! link against (libstdc++, libgcc_s, libgomp), taken from this machine. Made on demand:
//! `IMGBUILD_BENCH_LLM=DIR cargo test -p imgbuild --test it -- --ignored generate_llm_bench_inputs`
//! writes `DIR/channel`, `DIR/base` (an OCI layout, tag `glibc`) and `DIR/python` (`3.11`).

use std::path::Path;

use crate::common::cpython::{glibc_base_with, host_python};
use crate::common::sh;

#[test]
#[ignore = "made on demand by bench/llm.sh"]
fn generate_llm_bench_inputs() {
    let dir = std::env::var("IMGBUILD_BENCH_LLM")
        .expect("set IMGBUILD_BENCH_LLM to the directory to write the inputs to");
    let dir = Path::new(&dir);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let py = host_python();
    let channel = py.channel.strip_prefix("file://").unwrap();
    sh(&format!(
        "cp -r {channel} {}",
        dir.join("channel").display()
    ));
    let libs = [
        "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
        "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
        "/usr/lib/x86_64-linux-gnu/libgomp.so.1",
    ];
    glibc_base_with(&dir.join("base"), &libs);
    std::fs::write(dir.join("python"), &py.short).unwrap();
}
