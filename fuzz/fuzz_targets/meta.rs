//! Fuzz target `meta`: see `tidal::fuzzing::meta` for the decoder and oracle.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tidal::fuzzing::meta(data);
});
