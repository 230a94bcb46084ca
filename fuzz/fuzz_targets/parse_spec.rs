//! environment.yml text → EnvSpec: any input gives a spec or an error, never a panic, a hang
//! or unbounded memory (see crates/imgbuild-builder/src/bounded.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = imgbuild_builder::EnvSpec::from_yaml_str(text, std::path::Path::new("fuzz.yml"));
    }
});
