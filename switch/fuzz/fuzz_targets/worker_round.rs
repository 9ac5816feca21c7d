#![no_main]
//! See `switch::fuzzing::worker_round`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = switch::fuzzing::worker_round(data);
});
