//! git credential codec: decode never panics; what decodes re-encodes, and what is encoded
//! never carries a CR, LF or NUL inside a value.
#![no_main]
use clawker_protocol::credential::{CredentialFields, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(pairs) = decode(text) {
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let encoded = encode(&refs).expect("decoded pairs must re-encode");
        assert_eq!(decode(&encoded).expect("re-decodes"), pairs);
        let fields = CredentialFields::from_pairs(pairs);
        if let Ok(out) = fields.encode() {
            assert!(!out.trim_end_matches('\n').contains("\n\n"));
            assert!(!out.contains('\r') && !out.contains('\0'));
        }
    }
});
