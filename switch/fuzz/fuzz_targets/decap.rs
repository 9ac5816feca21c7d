#![no_main]
//! See `switch::fuzzing::decap`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switch::fuzzing::decap(data);
});
