#![no_main]
//! See `switch::fuzzing::ipam_store`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switch::fuzzing::ipam_store(data);
});
