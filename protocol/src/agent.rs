//! SSH agent protocol framing (draft-miller-ssh-agent) and the message filter.
//!
//! A frame is a `u32` big-endian length followed by that many bytes; the first byte of the
//! body is the message number. The length is checked against [`MAX_FRAME`] before any
//! buffer is sized from it.

use std::collections::BTreeSet;

use thiserror::Error;

/// Largest agent message body the toolkit relays.
pub const MAX_FRAME: usize = 256 * 1024;

/// Message numbers (draft-miller-ssh-agent section 7).
pub mod msg {
    pub const FAILURE: u8 = 5;
    pub const SUCCESS: u8 = 6;
    pub const REQUEST_IDENTITIES: u8 = 11;
    pub const IDENTITIES_ANSWER: u8 = 12;
    pub const SIGN_REQUEST: u8 = 13;
    pub const SIGN_RESPONSE: u8 = 14;
    pub const ADD_IDENTITY: u8 = 17;
    pub const REMOVE_IDENTITY: u8 = 18;
    pub const REMOVE_ALL_IDENTITIES: u8 = 19;
    pub const ADD_SMARTCARD_KEY: u8 = 20;
    pub const REMOVE_SMARTCARD_KEY: u8 = 21;
    pub const LOCK: u8 = 22;
    pub const UNLOCK: u8 = 23;
    pub const ADD_ID_CONSTRAINED: u8 = 25;
    pub const ADD_SMARTCARD_KEY_CONSTRAINED: u8 = 26;
    pub const EXTENSION: u8 = 27;
    pub const EXTENSION_FAILURE: u8 = 28;
}

/// The whole `SSH_AGENT_FAILURE` frame.
pub const FAILURE_FRAME: [u8; 5] = [0, 0, 0, 1, msg::FAILURE];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AgentFrameError {
    #[error("agent frame is shorter than its 4-byte length prefix")]
    Truncated,
    #[error("agent frame declares {declared} bytes but carries {actual}")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("agent frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("agent frame is empty")]
    Empty,
}

/// Encodes `body` as one frame.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads the length prefix of a frame at the start of `buf`.
///
/// `Ok(None)` means more bytes are needed; `Ok(Some(n))` means a whole frame of `4 + n`
/// bytes is available. Errors for an empty or oversized declared length, before anything
/// is allocated for it.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, AgentFrameError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let n = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if n == 0 {
        return Err(AgentFrameError::Empty);
    }
    if n > MAX_FRAME {
        return Err(AgentFrameError::TooLarge(n));
    }
    Ok((buf.len() >= 4 + n).then_some(n))
}

/// Checks that `bytes` is exactly one whole frame and returns its body.
pub fn single_frame(bytes: &[u8]) -> Result<&[u8], AgentFrameError> {
    if bytes.len() < 4 {
        return Err(AgentFrameError::Truncated);
    }
    let declared = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if declared > MAX_FRAME {
        return Err(AgentFrameError::TooLarge(declared));
    }
    if declared == 0 {
        return Err(AgentFrameError::Empty);
    }
    let actual = bytes.len() - 4;
    if declared != actual {
        return Err(AgentFrameError::LengthMismatch { declared, actual });
    }
    Ok(&bytes[4..])
}

/// Appends an SSH `string` (u32 length + bytes).
pub fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// A SIGN_REQUEST body: `13 · string key_blob · string data · u32 flags`.
pub fn sign_request(key_blob: &[u8], data: &[u8], flags: u32) -> Vec<u8> {
    let mut b = vec![msg::SIGN_REQUEST];
    put_string(&mut b, key_blob);
    put_string(&mut b, data);
    b.extend_from_slice(&flags.to_be_bytes());
    b
}

/// The data `ssh-keygen -Y sign -n NAMESPACE` asks the agent to sign (PROTOCOL.sshsig).
pub fn sshsig_blob(namespace: &str, hash_algorithm: &str, hash: &[u8]) -> Vec<u8> {
    let mut d = b"SSHSIG".to_vec();
    put_string(&mut d, namespace.as_bytes());
    put_string(&mut d, b"");
    put_string(&mut d, hash_algorithm.as_bytes());
    put_string(&mut d, hash);
    d
}

/// Reads an SSH `string` (u32 length + bytes) at the start of `buf`.
pub fn read_string(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let s = buf.get(4..4usize.checked_add(len)?)?;
    Some((s, &buf[4 + len..]))
}

/// The extension name of an `SSH_AGENTC_EXTENSION` body, if it is one and well-formed.
pub fn extension_name(body: &[u8]) -> Option<&str> {
    let (&kind, rest) = body.split_first()?;
    if kind != msg::EXTENSION {
        return None;
    }
    let (name, _) = read_string(rest)?;
    std::str::from_utf8(name).ok()
}

/// Which agent messages may reach the host's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPolicy {
    pub allowed_messages: BTreeSet<u8>,
    pub allowed_extensions: BTreeSet<String>,
    /// What a SIGN_REQUEST may ask to sign; `None` allows any data.
    pub sign: Option<SignPolicy>,
}

/// Signing purposes a container may use the host's keys for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignPolicy {
    /// SSH user authentication (RFC 4252 section 7) with the same key.
    pub userauth: bool,
    /// SSHSIG namespaces (`ssh-keygen -Y sign -n NAMESPACE`) allowed.
    pub namespaces: BTreeSet<String>,
}

impl Default for SignPolicy {
    fn default() -> Self {
        Self {
            userauth: true,
            namespaces: ["git".to_string()].into(),
        }
    }
}

/// What a SIGN_REQUEST asks to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignPurpose {
    /// An SSH user-authentication request for the key being asked to sign.
    UserAuth,
    /// An SSHSIG blob with this namespace.
    SshSig(String),
    /// Anything else, including a userauth request for a different key.
    Other,
}

const SSH_MSG_USERAUTH_REQUEST: u8 = 50;

/// Reads a `boolean`/`byte` at the start of `buf`.
fn read_byte(buf: &[u8]) -> Option<(u8, &[u8])> {
    buf.split_first().map(|(b, rest)| (*b, rest))
}

/// Classifies the data of a SIGN_REQUEST body (`13 · string key · string data · u32 flags`).
pub fn sign_purpose(body: &[u8]) -> SignPurpose {
    let parse = || -> Option<SignPurpose> {
        let (&kind, rest) = body.split_first()?;
        if kind != msg::SIGN_REQUEST {
            return None;
        }
        let (key, rest) = read_string(rest)?;
        let (data, rest) = read_string(rest)?;
        if rest.len() != 4 {
            return None;
        }
        if let Some(blob) = data.strip_prefix(b"SSHSIG") {
            let (namespace, rest) = read_string(blob)?;
            let (_reserved, rest) = read_string(rest)?;
            let (_hash_alg, rest) = read_string(rest)?;
            let (_hash, rest) = read_string(rest)?;
            if !rest.is_empty() {
                return None;
            }
            return Some(SignPurpose::SshSig(
                std::str::from_utf8(namespace).ok()?.to_string(),
            ));
        }
        // RFC 4252 section 7: session id, 50, user, service, "publickey", TRUE, alg, key;
        // OpenSSH 8.9+ uses "publickey-hostbound-v00@openssh.com" and appends the server's
        // host key.
        let (_session, rest) = read_string(data)?;
        let (m, rest) = read_byte(rest)?;
        let (_user, rest) = read_string(rest)?;
        let (_service, rest) = read_string(rest)?;
        let (method, rest) = read_string(rest)?;
        let (has_sig, rest) = read_byte(rest)?;
        let (_alg, rest) = read_string(rest)?;
        let (auth_key, rest) = read_string(rest)?;
        let ends_right = match method {
            b"publickey" => rest.is_empty(),
            b"publickey-hostbound-v00@openssh.com" => {
                read_string(rest).is_some_and(|(_hostkey, r)| r.is_empty())
            }
            _ => false,
        };
        (m == SSH_MSG_USERAUTH_REQUEST && has_sig == 1 && auth_key == key && ends_right)
            .then_some(SignPurpose::UserAuth)
    };
    parse().unwrap_or(SignPurpose::Other)
}

impl Default for AgentPolicy {
    /// List and sign, plus the two harmless extensions OpenSSH sends; nothing that adds,
    /// removes or locks keys.
    fn default() -> Self {
        Self {
            allowed_messages: [msg::REQUEST_IDENTITIES, msg::SIGN_REQUEST].into(),
            allowed_extensions: ["session-bind@openssh.com".to_string(), "query".to_string()]
                .into(),
            sign: Some(SignPolicy::default()),
        }
    }
}

/// Messages that change the agent itself — add or remove keys, lock, unlock, smartcards —
/// are never forwarded, whatever the config says (SPEC.md 11): the agent is the user's,
/// and a container can neither re-key it nor lock it (nor unlock a locked one).
pub const NEVER: [u8; 9] = [
    msg::ADD_IDENTITY,
    msg::REMOVE_IDENTITY,
    msg::REMOVE_ALL_IDENTITIES,
    msg::ADD_SMARTCARD_KEY,
    msg::REMOVE_SMARTCARD_KEY,
    msg::LOCK,
    msg::UNLOCK,
    msg::ADD_ID_CONSTRAINED,
    msg::ADD_SMARTCARD_KEY_CONSTRAINED,
];

/// What one identity holds beyond the policy: which keys (`None`: every key) and whether
/// it may sign SSH logins (scope `ssh-login`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentGrant {
    pub keys: Option<BTreeSet<String>>,
    pub login: bool,
}

impl AgentGrant {
    /// Every key, logins too: as far as the policy lets anyone.
    pub fn all() -> Self {
        Self {
            keys: None,
            login: true,
        }
    }
}

/// What to do with one agent request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// Answer `SSH_AGENT_FAILURE` without contacting the agent.
    Refuse,
}

impl AgentPolicy {
    /// [`AgentPolicy::decide_for`] an identity holding every key and logins.
    pub fn decide(&self, body: &[u8]) -> Verdict {
        self.decide_for(body, &AgentGrant::all()).0
    }

    /// The one agent filter (SPEC.md 6.2, 11), for the HTTP route and the streams alike:
    /// the verdict on one request body, and why it was refused.
    pub fn decide_for(&self, body: &[u8], grant: &AgentGrant) -> (Verdict, Option<&'static str>) {
        let Some(&kind) = body.first() else {
            return (Verdict::Refuse, Some("an empty agent message"));
        };
        if NEVER.contains(&kind) {
            return (
                Verdict::Refuse,
                Some(
                    "adding, removing, locking or unlocking keys is never allowed from a container",
                ),
            );
        }
        let allowed = if kind == msg::EXTENSION {
            extension_name(body).is_some_and(|n| self.allowed_extensions.contains(n))
        } else if kind == msg::SIGN_REQUEST && self.allowed_messages.contains(&kind) {
            if let Some(keys) = &grant.keys {
                let key = read_string(&body[1..]).map(|(k, _)| fingerprint(k));
                if !key.is_some_and(|k| keys.contains(&k)) {
                    return (Verdict::Refuse, Some("this identity may not use this key"));
                }
            }
            let purpose = sign_purpose(body);
            if purpose == SignPurpose::UserAuth && !grant.login {
                return (
                    Verdict::Refuse,
                    Some("ssh login signatures need the scope ssh-login"),
                );
            }
            match (&self.sign, purpose) {
                (None, _) => true,
                (Some(p), SignPurpose::UserAuth) => p.userauth,
                (Some(p), SignPurpose::SshSig(ns)) => p.namespaces.contains(&ns),
                (Some(_), SignPurpose::Other) => false,
            }
        } else {
            self.allowed_messages.contains(&kind)
        };
        if allowed {
            (Verdict::Forward, None)
        } else {
            (Verdict::Refuse, Some("not allowed by the agent policy"))
        }
    }
}

/// OpenSSH's fingerprint of a public key blob: `SHA256:` + unpadded base64.
pub fn fingerprint(key_blob: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key_blob);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// Re-encodes an IDENTITIES_ANSWER frame with only the keys whose fingerprint is in `keys`.
pub fn filter_identities(reply: &[u8], keys: &std::collections::BTreeSet<String>) -> Vec<u8> {
    let parse = || -> Option<Vec<u8>> {
        let body = single_frame(reply).ok()?;
        let (&kind, rest) = body.split_first()?;
        if kind != msg::IDENTITIES_ANSWER {
            return None;
        }
        let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        let mut rest = &rest[4..];
        let mut kept: Vec<&[u8]> = Vec::new();
        for _ in 0..n {
            let start = rest;
            let (blob, after) = read_string(rest)?;
            let (_comment, after) = read_string(after)?;
            if keys.contains(&fingerprint(blob)) {
                kept.push(&start[..start.len() - after.len()]);
            }
            rest = after;
        }
        let mut out = vec![msg::IDENTITIES_ANSWER];
        out.extend_from_slice(&(kept.len() as u32).to_be_bytes());
        for k in kept {
            out.extend_from_slice(k);
        }
        Some(frame(&out))
    };
    parse().unwrap_or_else(|| FAILURE_FRAME.to_vec())
}

/// An agent request as the audit log names it, with the key's fingerprint for signatures.
pub fn describe_request(body: &[u8]) -> (String, Option<String>) {
    let printable = |s: &str| {
        s.chars()
            .filter(char::is_ascii_graphic)
            .take(64)
            .collect::<String>()
    };
    match body.first().copied() {
        Some(msg::REQUEST_IDENTITIES) => ("list".into(), None),
        Some(msg::SIGN_REQUEST) => {
            let key = read_string(&body[1..]).map(|(k, _)| fingerprint(k));
            let purpose = match sign_purpose(body) {
                SignPurpose::UserAuth => "sign:userauth".to_string(),
                SignPurpose::SshSig(ns) => format!("sign:sshsig:{}", printable(&ns)),
                SignPurpose::Other => "sign:other".to_string(),
            };
            (purpose, key)
        }
        Some(msg::EXTENSION) => (
            format!(
                "extension:{}",
                printable(extension_name(body).unwrap_or("?"))
            ),
            None,
        ),
        Some(n) => (format!("message:{n}"), None),
        None => ("empty".into(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(name: &str) -> Vec<u8> {
        let mut b = vec![msg::EXTENSION];
        b.extend_from_slice(&(name.len() as u32).to_be_bytes());
        b.extend_from_slice(name.as_bytes());
        b
    }

    #[test]
    fn golden_frames() {
        assert_eq!(frame(&[msg::REQUEST_IDENTITIES]), [0, 0, 0, 1, 11]);
        assert_eq!(frame(&[msg::FAILURE]), FAILURE_FRAME);
    }

    #[test]
    fn single_frame_boundaries() {
        assert_eq!(single_frame(&[0, 0, 0, 1, 11]).unwrap(), &[11]);
        assert_eq!(single_frame(&[0, 0, 0]), Err(AgentFrameError::Truncated));
        assert_eq!(single_frame(&[0, 0, 0, 0]), Err(AgentFrameError::Empty));
        assert!(matches!(
            single_frame(&[0, 0, 0, 2, 11]),
            Err(AgentFrameError::LengthMismatch { .. })
        ));
        // two frames concatenated are not one frame
        assert!(single_frame(&[0, 0, 0, 1, 11, 0, 0, 0, 1, 11]).is_err());
        let big = frame(&vec![13u8; MAX_FRAME]);
        assert!(single_frame(&big).is_ok());
        let too_big = frame(&vec![13u8; MAX_FRAME + 1]);
        assert_eq!(
            single_frame(&too_big),
            Err(AgentFrameError::TooLarge(MAX_FRAME + 1))
        );
    }

    #[test]
    fn frame_len_checks_before_allocating() {
        assert_eq!(frame_len(&[0, 0]), Ok(None));
        assert_eq!(frame_len(&[0, 0, 0, 2, 1]), Ok(None));
        assert_eq!(frame_len(&[0, 0, 0, 1, 1]), Ok(Some(1)));
        assert_eq!(
            frame_len(&[0xff, 0xff, 0xff, 0xff]),
            Err(AgentFrameError::TooLarge(u32::MAX as usize))
        );
    }

    use super::put_string as string;

    fn sign_request(key: &[u8], data: &[u8]) -> Vec<u8> {
        super::sign_request(key, data, 0)
    }

    fn sshsig(namespace: &str) -> Vec<u8> {
        sshsig_blob(namespace, "sha512", &[7u8; 64])
    }

    fn userauth_with(key: &[u8], method: &[u8], hostkey: Option<&[u8]>) -> Vec<u8> {
        let mut d = Vec::new();
        string(&mut d, &[1u8; 32]);
        d.push(50);
        string(&mut d, b"git");
        string(&mut d, b"ssh-connection");
        string(&mut d, method);
        d.push(1);
        string(&mut d, b"ssh-ed25519");
        string(&mut d, key);
        if let Some(h) = hostkey {
            string(&mut d, h);
        }
        d
    }

    fn userauth(key: &[u8]) -> Vec<u8> {
        userauth_with(key, b"publickey", None)
    }

    #[test]
    fn sign_purposes() {
        let key = b"key-blob";
        let p = AgentPolicy::default();
        assert_eq!(
            sign_purpose(&sign_request(key, &sshsig("git"))),
            SignPurpose::SshSig("git".into())
        );
        assert_eq!(
            p.decide(&sign_request(key, &sshsig("git"))),
            Verdict::Forward
        );
        assert_eq!(
            p.decide(&sign_request(key, &sshsig("file"))),
            Verdict::Refuse
        );
        assert_eq!(
            p.decide(&sign_request(key, &userauth(key))),
            Verdict::Forward
        );
        let hostbound = userauth_with(
            key,
            b"publickey-hostbound-v00@openssh.com",
            Some(b"hostkey"),
        );
        assert_eq!(
            p.decide(&sign_request(key, &hostbound)),
            Verdict::Forward,
            "OpenSSH 8.9+"
        );
        let unbound = userauth_with(key, b"publickey-hostbound-v00@openssh.com", None);
        assert_eq!(p.decide(&sign_request(key, &unbound)), Verdict::Refuse);
        let other_method = userauth_with(key, b"password", None);
        assert_eq!(p.decide(&sign_request(key, &other_method)), Verdict::Refuse);
        // A userauth blob for another key is not ours to sign.
        assert_eq!(
            p.decide(&sign_request(key, &userauth(b"other"))),
            Verdict::Refuse
        );
        assert_eq!(p.decide(&sign_request(key, &[0x42; 64])), Verdict::Refuse);
        let mut trailing = sshsig("git");
        trailing.push(0);
        assert_eq!(p.decide(&sign_request(key, &trailing)), Verdict::Refuse);
        let any = AgentPolicy {
            sign: None,
            ..AgentPolicy::default()
        };
        assert_eq!(
            any.decide(&sign_request(key, &[0x42; 64])),
            Verdict::Forward
        );
    }

    #[test]
    fn the_grant_decides_keys_and_logins_and_nothing_re_keys_the_agent() {
        let key = b"key-blob";
        let fp = fingerprint(key);
        let p = AgentPolicy::default();
        let no_login = AgentGrant {
            keys: None,
            login: false,
        };
        let (v, why) = p.decide_for(&sign_request(key, &userauth(key)), &no_login);
        assert_eq!(
            (v, why),
            (
                Verdict::Refuse,
                Some("ssh login signatures need the scope ssh-login")
            )
        );
        assert_eq!(
            p.decide_for(&sign_request(key, &sshsig("git")), &no_login)
                .0,
            Verdict::Forward
        );
        let one_key = AgentGrant {
            keys: Some([fp].into()),
            login: true,
        };
        assert_eq!(
            p.decide_for(&sign_request(key, &sshsig("git")), &one_key).0,
            Verdict::Forward
        );
        assert_eq!(
            p.decide_for(&sign_request(b"other", &sshsig("git")), &one_key),
            (Verdict::Refuse, Some("this identity may not use this key"))
        );
        // A config that widens the messages still never lets these through.
        let wide = AgentPolicy {
            allowed_messages: (0u8..=255).collect(),
            sign: None,
            ..AgentPolicy::default()
        };
        for kind in NEVER {
            assert_eq!(
                wide.decide(&[kind, 0, 0, 0, 0]),
                Verdict::Refuse,
                "message {kind}"
            );
        }
        assert_eq!(wide.decide(&[msg::REQUEST_IDENTITIES]), Verdict::Forward);
    }

    proptest::proptest! {
        #[test]
        fn sign_purpose_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = sign_purpose(&bytes);
        }
    }

    #[test]
    fn default_policy_table() {
        let p = AgentPolicy::default();
        for kind in 0u8..=255 {
            let expected = if kind == 11 {
                Verdict::Forward
            } else {
                Verdict::Refuse
            };
            let body = if kind == msg::EXTENSION {
                ext("add-identity@example")
            } else if kind == msg::SIGN_REQUEST {
                sign_request(b"k", &[9u8; 64]) // arbitrary data: refused by the sign policy
            } else {
                vec![kind]
            };
            assert_eq!(p.decide(&body), expected, "message {kind}");
        }
        assert_eq!(p.decide(&ext("session-bind@openssh.com")), Verdict::Forward);
        assert_eq!(p.decide(&ext("query")), Verdict::Forward);
        assert_eq!(p.decide(&[msg::EXTENSION, 0, 0]), Verdict::Refuse);
        assert_eq!(
            p.decide(&[msg::EXTENSION, 0, 0, 0, 9, b'q']),
            Verdict::Refuse
        );
        assert_eq!(p.decide(&[]), Verdict::Refuse);
    }
}
