#![no_main]
//! See `switch::fuzzing::nat_tcp`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switch::fuzzing::nat_tcp(data);
});
