#![no_main]
//! See `switch::fuzzing::tunnel_tx`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = switch::fuzzing::tunnel_tx(data);
});
