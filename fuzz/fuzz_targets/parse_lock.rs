//! Lock file text (pixi.lock, conda-lock v1, @EXPLICIT) → the packages for one platform: any
//! input gives packages or an error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let platform = "linux/amd64".parse().expect("a platform");
        let _ = imgbuild_builder::lock::parse_lock(
            text,
            std::path::Path::new("/nonexistent/fuzz.lock"),
            None,
            platform,
        );
    }
});
