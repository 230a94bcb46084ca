//! The channel `bench/build.sh` measures against: ~1 GiB installed, shaped like a CUDA/pytorch
//! environment — four packages of 100–350 MiB (random bytes like shared libraries, and
//! compressible text-like data), 200 small packages of ~300 KiB, and a second version of one
//! small package for the upgrade measurement. Made on demand by the benchmark:
//! `IMGBUILD_BENCH_CHANNEL=DIR cargo test -p imgbuild --test it -- --ignored generate_bench_channel`.
//!
//! With `IMGBUILD_BENCH_BYTES=elf` the "random" part of each big package is this machine's
//! shared libraries instead (windows of `/usr/lib/x86_64-linux-gnu/*.so*`, which gzip to about
//! half, like the CUDA and torch libraries): random bytes are detected and stored by a
//! compressor, which flatters whoever compresses fastest.

use crate::common::channel::{index, noise, Content, Package};

const MIB: usize = 1 << 20;

/// Text-like bytes (numbers in lines) that gzip shrinks about 2-3x, like headers, python
/// sources and CUDA fatbins with repeated sections.
fn compressible(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut x = seed | 1;
    let mut i = 0u64;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(format!("w[{i}] = {:.6}\n", (x % 1_000_000) as f64 / 7.0).as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// `len` bytes of real shared libraries, from an offset `seed` picks in the concatenation of
/// this machine's `/usr/lib/x86_64-linux-gnu/*.so*` (read once).
fn elf_bytes(len: usize, seed: u64) -> Vec<u8> {
    static POOL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let mut libs: Vec<std::path::PathBuf> = walkdir::WalkDir::new("/usr/lib/x86_64-linux-gnu")
            .max_depth(2)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file() && e.file_name().to_string_lossy().contains(".so"))
            .map(|e| e.into_path())
            .collect();
        libs.sort();
        let mut pool = Vec::new();
        for lib in libs {
            let bytes = std::fs::read(&lib).unwrap_or_default();
            if bytes.starts_with(b"\x7fELF") {
                pool.extend_from_slice(&bytes);
            }
        }
        assert!(
            pool.len() > 64 * MIB,
            "too few shared libraries here for the elf bytes"
        );
        pool
    });
    let start = (seed as usize).wrapping_mul(7_919_993) % pool.len();
    pool.iter().cycle().skip(start).take(len).copied().collect()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn file(bytes: Vec<u8>) -> Content {
    Content::File {
        bytes,
        executable: false,
        placeholder: None,
    }
}

/// A big package: `random` MiB of random and `text` MiB of compressible bytes, in 50 MiB files.
fn big(name: &'static str, random: usize, text: usize, seed: u64) -> Package {
    let mut files = Vec::new();
    let mut add = |kind: &str, total: usize, make: &dyn Fn(usize, u64) -> Vec<u8>| {
        let mut left = total * MIB;
        let mut n = 0;
        while left > 0 {
            let len = left.min(50 * MIB);
            files.push((
                leak(format!("lib/{name}/{kind}{n}.bin")),
                // Distinct odd seeds (noise() ORs in the low bit): no two files are equal, so
                // in-layer dedupe does not flatter imgbuild against the peers.
                file(make(
                    len,
                    (seed * 1000 + n as u64 * 10 + kind.len() as u64) * 2 + 1,
                )),
            ));
            left -= len;
            n += 1;
        }
    };
    let elf = std::env::var("IMGBUILD_BENCH_BYTES").is_ok_and(|v| v == "elf");
    if elf {
        add("lib", random, &|len, s| elf_bytes(len, s));
    } else {
        add("lib", random, &|len, s| noise(len, s));
    }
    add("data", text, &|len, s| compressible(len, s));
    Package {
        name,
        version: "1.0",
        build: "0",
        subdir: "linux-64",
        noarch: None,
        depends: vec![],
        files,
        entry_points: vec![],
        conda_format: true,
    }
}

fn small(i: usize, version: &'static str) -> Package {
    let files = (0..10)
        .map(|f| {
            let seed = ((i * 100 + f) as u64 * 2 + u64::from(version != "1.0")) * 2 + 1 + (1 << 40);
            let bytes = if f % 2 == 0 {
                noise(20_000, seed)
            } else {
                compressible(40_000, seed)
            };
            (
                leak(format!("lib/python3.10/site-packages/small{i:03}/m{f}.py")),
                file(bytes),
            )
        })
        .collect();
    Package {
        name: leak(format!("small{i:03}")),
        version,
        build: "0",
        subdir: "linux-64",
        noarch: None,
        depends: vec![],
        files,
        entry_points: vec![],
        conda_format: true,
    }
}

#[test]
#[ignore = "made on demand by bench/build.sh"]
fn generate_bench_channel() {
    let dir = std::env::var("IMGBUILD_BENCH_CHANNEL")
        .expect("set IMGBUILD_BENCH_CHANNEL to the directory to write the channel to");
    let channel = std::path::Path::new(&dir);
    let _ = std::fs::remove_dir_all(channel);
    for pkg in [
        big("torchsim", 250, 100, 1),
        big("cudasim", 200, 100, 2),
        big("cudnnsim", 150, 0, 3),
        big("mklsim", 0, 100, 4),
    ] {
        pkg.write(channel);
    }
    for i in 0..200 {
        small(i, "1.0").write(channel);
    }
    small(7, "2.0").write(channel);
    index(channel);
    let _ = std::fs::remove_dir_all(channel.join(".tmp"));
}
