//! Bridge frame decoder over arbitrary byte streams: no panic, progress on every frame, and
//! every decoded frame re-encodes to the bytes it came from.
#![no_main]
use clawker_protocol::bridge::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while let Ok(Some((frame, used))) = decode(&data[at..]) {
        assert!(used >= 9);
        assert_eq!(frame.encode().expect("re-encodes"), &data[at..at + used]);
        at += used;
    }
});
