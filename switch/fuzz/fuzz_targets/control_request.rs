#![no_main]
//! See `switch::fuzzing::control_request`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switch::fuzzing::control_request(data);
});
