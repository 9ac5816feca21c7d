#![no_main]
//! See `switch::fuzzing::cni_input`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switch::fuzzing::cni_input(data);
});
