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
    #[error("{key} must be true or false")]
    NotABoolean { key: String },
    #[error("url is not a valid url")]
    BadUrl,
}

/// The capabilities of git's credential protocol (git 2.46+) this toolkit understands:
/// `authtype` (the `authtype`, `credential` and `ephemeral` attributes) and `state` (the
/// `state[]` and `continue` attributes). Others are dropped, as git does with ones it does
/// not know.
pub const CAPABILITIES: [&str; 2] = ["authtype", "state"];

/// Every attribute of git's credential protocol (git-credential(1), git 2.47) that crosses
/// from a container's git to the host's git and back. Keys git does not define are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialFields {
    /// `capability[]`, in order; only those of [`CAPABILITIES`].
    pub capability: Vec<String>,
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub username: Option<Secret<String>>,
    pub password: Option<Secret<String>>,
    pub password_expiry_utc: Option<String>,
    pub oauth_refresh_token: Option<Secret<String>>,
    pub authtype: Option<String>,
    pub credential: Option<Secret<String>>,
    pub ephemeral: Option<bool>,
    /// `state[]`, in order (a helper's own state across rounds).
    pub state: Vec<Secret<String>>,
    pub r#continue: Option<bool>,
    /// `wwwauth[]`, in order: the server's `WWW-Authenticate` challenges.
    pub wwwauth: Vec<String>,
}

/// git's boolean values (`git_config_bool`): `true`/`yes`/`on`/`1` and `false`/`no`/`off`/`0`
/// or empty, any case.
fn parse_bool(key: &str, value: &str) -> Result<bool, CredentialError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "" | "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(CredentialError::NotABoolean {
            key: key.to_string(),
        }),
    }
}

impl CredentialFields {
    /// Makes every empty attribute an absent one (an old client's `path: ""`,
    /// `password: ""`); the username and password too unless `keep_empty_login` (a `store`,
    /// where git stores an empty username and password as given: SPEC.md 4.3, git's t0303).
    pub fn drop_empty(&mut self, keep_empty_login: bool) {
        fn text(v: &mut Option<String>) {
            if v.as_deref() == Some("") {
                *v = None;
            }
        }
        fn secret(v: &mut Option<Secret<String>>) {
            if v.as_ref().is_some_and(|s| s.expose().is_empty()) {
                *v = None;
            }
        }
        text(&mut self.path);
        text(&mut self.password_expiry_utc);
        text(&mut self.authtype);
        secret(&mut self.oauth_refresh_token);
        secret(&mut self.credential);
        if !keep_empty_login {
            secret(&mut self.username);
            secret(&mut self.password);
        }
    }

    /// Picks git's attributes out of decoded pairs as git reads them: a repeated key's last
    /// value wins; `key[]` values accumulate in order and an empty one clears the list; `url`
    /// sets protocol, host, path, username and password from its parts, clearing what came
    /// before it.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, CredentialError> {
        let mut f = Self::default();
        for (k, v) in pairs {
            match k.as_str() {
                "protocol" => f.protocol = Some(v),
                "host" => f.host = Some(v),
                "path" => f.path = Some(v),
                "username" => f.username = Some(Secret::new(v)),
                "password" => f.password = Some(Secret::new(v)),
                "password_expiry_utc" => f.password_expiry_utc = Some(v),
                "oauth_refresh_token" => f.oauth_refresh_token = Some(Secret::new(v)),
                "authtype" => f.authtype = Some(v),
                "credential" => f.credential = Some(Secret::new(v)),
                "ephemeral" => f.ephemeral = Some(parse_bool(&k, &v)?),
                "continue" => f.r#continue = Some(parse_bool(&k, &v)?),
                "capability[]" if v.is_empty() => f.capability.clear(),
                "capability[]"
                    if CAPABILITIES.contains(&v.as_str()) && !f.capability.contains(&v) =>
                {
                    f.capability.push(v)
                }
                "state[]" if v.is_empty() => f.state.clear(),
                "state[]" => f.state.push(Secret::new(v)),
                "wwwauth[]" if v.is_empty() => f.wwwauth.clear(),
                "wwwauth[]" => f.wwwauth.push(v),
                "url" => f.set_url(&v)?,
                _ => {}
            }
        }
        Ok(f)
    }

    /// `url=…`: as git's `credential_from_url`, it replaces what came before with the URL's
    /// parts (the path without its leading slash; userinfo percent-decoded).
    fn set_url(&mut self, raw: &str) -> Result<(), CredentialError> {
        let u = url::Url::parse(raw).map_err(|_| CredentialError::BadUrl)?;
        let decoded = |s: &str| percent_decode(s).ok_or(CredentialError::BadUrl);
        self.protocol = Some(u.scheme().to_string());
        self.host = u.host_str().map(|h| match u.port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_string(),
        });
        let path = u.path().trim_start_matches('/');
        self.path = (!path.is_empty()).then(|| path.to_string());
        self.username = match u.username() {
            "" => None,
            name => Some(Secret::new(decoded(name)?)),
        };
        self.password = match u.password() {
            None => None,
            Some(p) => Some(Secret::new(decoded(p)?)),
        };
        Ok(())
    }

    /// Every attribute as git writes it, in git's order (capabilities first, as they must
    /// precede what depends on them); `false` booleans are git's absence of the attribute.
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        fn secret(s: &Option<Secret<String>>) -> Option<&str> {
            s.as_ref().map(|s| s.expose().as_str())
        }
        let flag = |b: Option<bool>| b.filter(|b| *b).map(|_| "1");
        let mut pairs: Vec<(&'static str, &str)> = Vec::new();
        pairs.extend(self.capability.iter().map(|c| ("capability[]", c.as_str())));
        let single = [
            ("protocol", self.protocol.as_deref()),
            ("host", self.host.as_deref()),
            ("path", self.path.as_deref()),
            ("username", secret(&self.username)),
            ("password", secret(&self.password)),
            ("password_expiry_utc", self.password_expiry_utc.as_deref()),
            ("oauth_refresh_token", secret(&self.oauth_refresh_token)),
            ("authtype", self.authtype.as_deref()),
            ("credential", secret(&self.credential)),
            ("ephemeral", flag(self.ephemeral)),
        ];
        pairs.extend(single.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        pairs.extend(self.state.iter().map(|s| ("state[]", s.expose().as_str())));
        if let Some(v) = flag(self.r#continue) {
            pairs.push(("continue", v));
        }
        pairs.extend(self.wwwauth.iter().map(|w| ("wwwauth[]", w.as_str())));
        pairs
    }

    /// Encodes the present attributes in git's order, followed by the blank terminator line.
    pub fn encode(&self) -> Result<String, CredentialError> {
        encode(&self.pairs())
    }

    /// The name of the first value holding a CR, LF or NUL, if any (every attribute).
    pub fn forbidden_field(&self) -> Option<&'static str> {
        self.pairs()
            .into_iter()
            .find(|(_, v)| has_forbidden_char(v))
            .map(|(k, _)| k)
    }
}

/// Percent-decoding of URL userinfo; `None` when the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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
            username: Some(Secret::new("u".into())),
            password: Some(Secret::new("p".into())),
            ..CredentialFields::default()
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
            ("capability[]".into(), "future-thing".into()),
            ("quit".into(), "1".into()),
        ])
        .unwrap();
        assert_eq!(f.host.as_deref(), Some("b"));
        assert_eq!(f.capability, ["authtype"]);
    }

    fn pairs(text: &str) -> Vec<(String, String)> {
        decode(text).unwrap()
    }

    #[test]
    fn every_attribute_of_git_2_47_round_trips_in_gits_order() {
        let text = "capability[]=authtype\ncapability[]=state\nprotocol=https\nhost=h.example\npath=o/r.git\nusername=u\npassword=p\npassword_expiry_utc=9999999999\noauth_refresh_token=rt\nauthtype=Bearer\ncredential=tok\nephemeral=1\nstate[]=a:1\nstate[]=b:2\ncontinue=1\nwwwauth[]=Basic realm=\"x\"\nwwwauth[]=Bearer\n\n";
        let f = CredentialFields::from_pairs(pairs(text)).unwrap();
        assert_eq!(f.state.len(), 2);
        assert_eq!(f.wwwauth, ["Basic realm=\"x\"", "Bearer"]);
        assert_eq!((f.ephemeral, f.r#continue), (Some(true), Some(true)));
        assert_eq!(f.encode().unwrap(), text);
    }

    #[test]
    fn arrays_clear_on_an_empty_value_and_booleans_are_gits() {
        let f = CredentialFields::from_pairs(pairs(
            "wwwauth[]=Basic\nwwwauth[]=\nwwwauth[]=Bearer\nephemeral=Yes\ncontinue=off\n",
        ))
        .unwrap();
        assert_eq!(f.wwwauth, ["Bearer"]);
        assert_eq!((f.ephemeral, f.r#continue), (Some(true), Some(false)));
        assert!(!f.encode().unwrap().contains("continue"));
        assert!(matches!(
            CredentialFields::from_pairs(pairs("ephemeral=maybe\n")),
            Err(CredentialError::NotABoolean { .. })
        ));
    }

    #[test]
    fn url_is_split_as_git_does_and_replaces_what_came_before() {
        let f = CredentialFields::from_pairs(pairs(
            "host=old\nusername=old\nurl=https://al%40ice:p%3Ass@git.example.com:8443/org/repo.git\npassword=later\n",
        ))
        .unwrap();
        assert_eq!(f.protocol.as_deref(), Some("https"));
        assert_eq!(f.host.as_deref(), Some("git.example.com:8443"));
        assert_eq!(f.path.as_deref(), Some("org/repo.git"));
        assert_eq!(f.username.unwrap().expose(), "al@ice");
        assert_eq!(f.password.unwrap().expose(), "later");
        let f = CredentialFields::from_pairs(pairs("username=u\nurl=https://h.example\n")).unwrap();
        assert!(f.username.is_none() && f.path.is_none());
        assert!(CredentialFields::from_pairs(pairs("url=not a url\n")).is_err());
    }

    #[test]
    fn a_forbidden_character_is_found_in_any_attribute() {
        let mut f = CredentialFields::default();
        assert_eq!(f.forbidden_field(), None);
        f.state.push(Secret::new("a\rb".into()));
        assert_eq!(f.forbidden_field(), Some("state[]"));
        f.oauth_refresh_token = Some(Secret::new("x\0".into()));
        assert_eq!(f.forbidden_field(), Some("oauth_refresh_token"));
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
        fn roundtrip(
            host in "[a-z0-9.]{1,20}",
            user in "[ -~]{0,20}",
            pass in "[ -~]{0,40}",
            token in proptest::option::of("[ -~]{0,20}"),
            states in proptest::collection::vec("[ -~]{1,10}", 0..3),
            www in proptest::collection::vec("[ -~]{1,10}", 0..3),
            ephemeral in proptest::option::of(proptest::bool::ANY),
        ) {
            let f = CredentialFields {
                capability: vec!["authtype".into()],
                protocol: Some("https".into()),
                host: Some(host),
                username: Some(Secret::new(user)),
                password: Some(Secret::new(pass)),
                oauth_refresh_token: token.clone().map(Secret::new),
                credential: token.map(Secret::new),
                state: states.into_iter().map(Secret::new).collect(),
                wwwauth: www,
                // `false` is git's absence of the attribute.
                ephemeral: ephemeral.filter(|b| *b),
                ..CredentialFields::default()
            };
            let back = CredentialFields::from_pairs(decode(&f.encode().unwrap()).unwrap()).unwrap();
            proptest::prop_assert_eq!(back, f);
        }

        #[test]
        fn decode_never_panics(s in "\\PC*") {
            let _ = decode(&s);
        }
    }
}
