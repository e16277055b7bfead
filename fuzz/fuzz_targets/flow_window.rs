//! The tunnel's window arithmetic (SPEC.md 6.3) under any sequence of sends, hand-ons,
//! honest and hostile grants and HELLOs: no panic, no overflow, credit never above the
//! window nor below zero, and a refused grant or an overrun changes nothing.
#![no_main]
use clawker_protocol::flow::{Credit, Hello, Intake, parse_window};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Hello::decode(data);
    let Some((head, ops)) = data.split_first_chunk::<4>() else {
        return;
    };
    let window = u32::from_be_bytes(*head).max(1);
    let mut credit = Credit::new(window);
    let mut intake = Intake::new(window);
    for op in ops.chunks(5) {
        let Some((&kind, rest)) = op.split_first() else { break };
        let n = rest.iter().fold(0u32, |a, b| a << 8 | u32::from(*b));
        match kind % 4 {
            0 => {
                let before = credit.clone();
                if !credit.take(n) {
                    assert_eq!(credit, before);
                }
            }
            1 => {
                let before = credit.clone();
                match parse_window(rest) {
                    Ok(g) => {
                        if credit.grant(g).is_err() {
                            assert_eq!(credit, before, "a refused grant changes nothing");
                        }
                    }
                    Err(_) => assert!(rest.len() != 4 || n == 0),
                }
            }
            2 => {
                let before = intake.clone();
                if intake.receive(n as usize).is_err() {
                    assert_eq!(intake, before, "an overrun changes nothing");
                }
            }
            _ => {
                if let Some(back) = intake.hand_on(n as usize) {
                    assert!(back > 0 && back <= window);
                }
            }
        }
        assert!(credit.available() <= credit.max());
        assert!(intake.held() <= window);
    }
});
