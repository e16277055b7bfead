//! git credential codec: decode never panics; what decodes re-encodes; every attribute of
//! git 2.47 (arrays, booleans, `url=` splitting, capabilities) survives a trip through the
//! wire types; what is encoded never carries a CR, LF or NUL inside a value.
#![no_main]
use clawker_protocol::api::{GitCredentialAction, GitCredentialRequest, GitCredentialResponse};
use clawker_protocol::credential::{CredentialFields, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(pairs) = decode(text) else { return };
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let encoded = encode(&refs).expect("decoded pairs must re-encode");
    assert_eq!(decode(&encoded).expect("re-decodes"), pairs);
    let Ok(fields) = CredentialFields::from_pairs(pairs) else { return };
    let Ok(out) = fields.encode() else { return };
    assert!(!out.trim_end_matches('\n').contains("\n\n"));
    assert!(!out.contains('\r') && !out.contains('\0'));
    // What git wrote re-reads to the same attributes (`ephemeral=0` and `continue=0` are
    // git's absence of the attribute).
    let mut expect = fields.clone();
    expect.ephemeral = expect.ephemeral.filter(|b| *b);
    expect.r#continue = expect.r#continue.filter(|b| *b);
    let again = CredentialFields::from_pairs(decode(&out).expect("re-decodes")).expect("re-reads");
    assert_eq!(again, expect);
    // And through the JSON of the API, both ways.
    if let Some(req) = GitCredentialRequest::from_fields(GitCredentialAction::Store, fields.clone()) {
        let json = serde_json::to_string(&req).expect("serialises");
        let back: GitCredentialRequest = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back.fields(), req.fields());
    }
    let reply = GitCredentialResponse::found(fields);
    let json = serde_json::to_string(&reply).expect("serialises");
    let back: GitCredentialResponse = serde_json::from_str(&json).expect("deserialises");
    assert_eq!(back.fields(), reply.fields());
});
