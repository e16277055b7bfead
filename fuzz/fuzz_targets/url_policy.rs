//! URL canonicalisation, the open-url policy and OAuth detection: no panic; a canonical URL
//! is itself canonical, http(s), without userinfo or control characters.
#![no_main]
use clawker_protocol::urls::{canonical_url, check_url_policy, detect_oauth};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(canon) = canonical_url(text) {
        assert_eq!(canonical_url(&canon).as_deref(), Ok(canon.as_str()));
        assert!(!canon.chars().any(char::is_control));
        let u = url::Url::parse(&canon).expect("canonical parses");
        assert!(matches!(u.scheme(), "http" | "https"));
        assert!(u.username().is_empty() && u.password().is_none());
        let _ = check_url_policy(&u, &[]);
    }
    if let Ok(u) = url::Url::parse(text) {
        if let Some(r) = detect_oauth(&u) {
            assert!(r.path.starts_with('/'));
        }
    }
});
