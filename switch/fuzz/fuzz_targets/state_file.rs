#![no_main]
//! See `switch::fuzzing::state_file`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switch::fuzzing::state_file(data);
});
