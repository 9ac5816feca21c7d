#![no_main]
//! See `switch::fuzzing::gro`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = switch::fuzzing::gro(data);
});
