//! git's credential helper protocol: `key=value` lines ended by a blank line or EOF.
//!
//! Strict on purpose: a CR, LF or NUL inside a key or value is how credential-smuggling
//! attacks against git helpers work (CVE-2020-5260, CVE-2024-52006), so both directions
//! refuse them instead of passing them through.

use thiserror::Error;

use crate::Secret;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CredentialError {
    #[error("line {line} has no '=': expected key=value")]
    MissingEquals { line: usize },
    #[error("empty key on line {line}")]
    EmptyKey { line: usize },
    #[error("{field} contains a carriage return, newline or NUL")]
    ForbiddenCharacter { field: String },
    #[error("key {key:?} contains '='")]
    EqualsInKey { key: String },
}

/// The fields the toolkit forwards; everything else git says is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialFields {
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub username: Option<Secret<String>>,
    pub password: Option<Secret<String>>,
    pub password_expiry_utc: Option<String>,
}

impl CredentialFields {
    /// Picks the known fields out of decoded pairs (the last occurrence wins, as in git).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut f = Self::default();
        for (k, v) in pairs {
            match k.as_str() {
                "protocol" => f.protocol = Some(v),
                "host" => f.host = Some(v),
                "path" => f.path = Some(v),
                "username" => f.username = Some(Secret::new(v)),
                "password" => f.password = Some(Secret::new(v)),
                "password_expiry_utc" => f.password_expiry_utc = Some(v),
                _ => {}
            }
        }
        f
    }

    /// Encodes the present fields, in git's order, followed by the blank terminator line.
    pub fn encode(&self) -> Result<String, CredentialError> {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        let plain = [
            ("protocol", self.protocol.as_deref()),
            ("host", self.host.as_deref()),
            ("path", self.path.as_deref()),
        ];
        pairs.extend(plain.iter().filter_map(|(k, v)| v.map(|v| (*k, v))));
        if let Some(u) = &self.username {
            pairs.push(("username", u.expose()));
        }
        if let Some(p) = &self.password {
            pairs.push(("password", p.expose()));
        }
        if let Some(e) = &self.password_expiry_utc {
            pairs.push(("password_expiry_utc", e));
        }
        encode(&pairs)
    }
}

/// True when `s` holds a character that may never appear in a credential field.
pub fn has_forbidden_char(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// Encodes pairs as `key=value\n` lines plus the terminating blank line.
pub fn encode(pairs: &[(&str, &str)]) -> Result<String, CredentialError> {
    let mut out = String::new();
    for (k, v) in pairs {
        if has_forbidden_char(k) || has_forbidden_char(v) {
            return Err(CredentialError::ForbiddenCharacter {
                field: (*k).to_string(),
            });
        }
        if k.contains('=') {
            return Err(CredentialError::EqualsInKey {
                key: (*k).to_string(),
            });
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
        out.push('\n');
    }
    out.push('\n');
    Ok(out)
}

/// Decodes `key=value` lines up to the first blank line or the end of input.
///
/// Only `\n` ends a line; a CR or NUL left in a value is an error, not something to strip.
pub fn decode(input: &str) -> Result<Vec<(String, String)>, CredentialError> {
    let mut pairs = Vec::new();
    for (i, line) in input.split('\n').enumerate() {
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or(CredentialError::MissingEquals { line: i + 1 })?;
        if k.is_empty() {
            return Err(CredentialError::EmptyKey { line: i + 1 });
        }
        if has_forbidden_char(k) || has_forbidden_char(v) {
            return Err(CredentialError::ForbiddenCharacter {
                field: k.replace(['\r', '\0'], "?"),
            });
        }
        pairs.push((k.to_string(), v.to_string()));
    }
    Ok(pairs)
}

/// Checks a credential `host` value: a DNS name, IPv4 or bracketed IPv6 address with an
/// optional port, nothing else (no path, userinfo or whitespace).
pub fn is_valid_credential_host(host: &str) -> bool {
    if host.is_empty() || host.len() > 255 {
        return false;
    }
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, after)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match after {
                    "" => return true,
                    p => match p.strip_prefix(':') {
                        Some(p) => ("x", Some(p)),
                        None => return false,
                    },
                }
            }
            None => return false,
        },
        None => match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        },
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || p.parse::<u16>().is_err())
    {
        return false;
    }
    !name.is_empty()
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_encode() {
        let f = CredentialFields {
            protocol: Some("https".into()),
            host: Some("github.com".into()),
            path: None,
            username: Some(Secret::new("u".into())),
            password: Some(Secret::new("p".into())),
            password_expiry_utc: None,
        };
        assert_eq!(
            f.encode().unwrap(),
            "protocol=https\nhost=github.com\nusername=u\npassword=p\n\n"
        );
    }

    #[test]
    fn decode_stops_at_blank_line_and_eof() {
        let p = decode("protocol=https\nhost=x\n\nignored=1\n").unwrap();
        assert_eq!(p.len(), 2);
        let p = decode("protocol=https\nhost=x").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(decode("").unwrap(), vec![]);
        // value may itself contain '='
        let p = decode("password=a=b\n").unwrap();
        assert_eq!(p[0].1, "a=b");
    }

    #[test]
    fn decode_rejects_smuggling() {
        assert!(matches!(
            decode("host=a\rb\n"),
            Err(CredentialError::ForbiddenCharacter { .. })
        ));
        assert!(matches!(
            decode("host=a\0b\n"),
            Err(CredentialError::ForbiddenCharacter { .. })
        ));
        assert!(matches!(
            decode("nonsense\n"),
            Err(CredentialError::MissingEquals { line: 1 })
        ));
        assert!(matches!(
            decode("=x\n"),
            Err(CredentialError::EmptyKey { .. })
        ));
    }

    #[test]
    fn encode_rejects_smuggling() {
        for bad in ["a\nhost=evil", "a\r", "a\0"] {
            assert!(encode(&[("host", bad)]).is_err(), "{bad:?}");
        }
        assert!(encode(&[("a=b", "c")]).is_err());
    }

    #[test]
    fn from_pairs_last_wins_and_ignores_unknown() {
        let f = CredentialFields::from_pairs(vec![
            ("host".into(), "a".into()),
            ("host".into(), "b".into()),
            ("capability[]".into(), "authtype".into()),
        ]);
        assert_eq!(f.host.as_deref(), Some("b"));
    }

    #[test]
    fn hosts() {
        for ok in [
            "github.com",
            "git.example.com:8443",
            "127.0.0.1",
            "[::1]",
            "[::1]:22",
            "my_host",
        ] {
            assert!(is_valid_credential_host(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "evil.com/path",
            "u@evil.com",
            "a:",
            "a:99999",
            "[::1",
            "[zz]",
            "-a",
            "a\n",
        ] {
            assert!(!is_valid_credential_host(bad), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn roundtrip(host in "[a-z0-9.]{1,20}", user in "[ -~]{0,20}", pass in "[ -~]{0,40}") {
            let f = CredentialFields {
                protocol: Some("https".into()),
                host: Some(host),
                path: None,
                username: Some(Secret::new(user)),
                password: Some(Secret::new(pass)),
                password_expiry_utc: None,
            };
            let back = CredentialFields::from_pairs(decode(&f.encode().unwrap()).unwrap());
            proptest::prop_assert_eq!(back, f);
        }

        #[test]
        fn decode_never_panics(s in "\\PC*") {
            let _ = decode(&s);
        }
    }
}
