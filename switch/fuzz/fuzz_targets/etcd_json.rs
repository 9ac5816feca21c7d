#![no_main]
//! See `switch::fuzzing::etcd_json`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switch::fuzzing::etcd_json(data);
});
