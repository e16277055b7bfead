//! SSH agent framing and the message filter: no panic, and nothing the filter forwards is
//! outside the allowed message types.
#![no_main]
use clawker_protocol::agent::{AgentPolicy, Verdict, frame_len, msg, sign_purpose, single_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame_len(data);
    let policy = AgentPolicy::default();
    let _ = sign_purpose(data);
    if let Ok(body) = single_frame(data) {
        if policy.decide(body) == Verdict::Forward {
            assert!(matches!(body[0], msg::REQUEST_IDENTITIES | msg::SIGN_REQUEST | msg::EXTENSION));
        }
    }
    if policy.decide(data) == Verdict::Forward {
        assert!(matches!(data[0], msg::REQUEST_IDENTITIES | msg::SIGN_REQUEST | msg::EXTENSION));
    }
});
