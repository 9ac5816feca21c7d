#![no_main]
//! See `switch::fuzzing::docker_request`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switch::fuzzing::docker_request(data);
});
