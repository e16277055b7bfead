//! Scoped tokens: `hostproxy token issue|list|revoke` and the daemon's view of them.
//!
//! `<state>/tokens.json` (0600) holds, per token, its name, the SHA-256 of the token (never
//! the token), scopes, optional container binding and expiry, and a revoked flag. The
//! daemon re-reads the file whenever it changes, so `revoke` takes effect on the next
//! request. The user's own `hostproxy.token` is not in this file and has every scope.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

use super::identity::{Identity, Scope};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Seconds since the epoch.
    pub created: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    #[serde(default)]
    pub revoked: bool,
}

impl TokenEntry {
    pub fn is_live(&self, now: u64) -> bool {
        !self.revoked && self.expires.is_none_or(|e| now < e)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, Error)]
pub enum TokenError {
    #[error("cannot use {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid token file")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("a token named {0:?} already exists: revoke it or pick another name")]
    Exists(String),
    #[error("no token named {0:?}")]
    NotFound(String),
    #[error("token names are 1-64 letters, digits, '-', '_' or '.'")]
    BadName,
    #[error("the operating system's random source failed")]
    Random,
    #[error("that lifetime is too long: give it in hours or days (e.g. 8h, 30d)")]
    TtlTooLong,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn sha256_hex(token: &str) -> String {
    clawker_protocol::hex(&Sha256::digest(token.as_bytes()))
}

/// What identifies one version of the token file: it is replaced by rename on every write,
/// so the inode changes even where timestamps have a second's granularity (HFS+, some
/// network filesystems), and an issue and a revoke within one second are both seen.
type Version = ((u64, u64), u64, Option<SystemTime>);

/// The token file, cached by its version.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    cache: Mutex<(Option<Version>, Vec<TokenEntry>)>,
}

impl TokenStore {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            cache: Mutex::new((None, Vec::new())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Vec<TokenEntry>, TokenError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice::<TokenFile>(&bytes)
                .map(|f| f.tokens)
                .map_err(|source| TokenError::Parse {
                    path: self.path.clone(),
                    source,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(TokenError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn write(&self, tokens: Vec<TokenEntry>) -> Result<(), TokenError> {
        let io = |source| TokenError::Io {
            path: self.path.clone(),
            source,
        };
        // A store that cannot be serialised is never written over the file (an empty body
        // would revoke every token at once).
        let body = serde_json::to_vec_pretty(&TokenFile { tokens }).map_err(|e| io(e.into()))?;
        crate::util::write_private_atomic(&self.path, &body).map_err(io)
    }

    /// Read-modify-write under an exclusive lock, so concurrent CLI calls and the daemon's
    /// container watcher do not lose each other's changes.
    fn update<T>(
        &self,
        f: impl FnOnce(&mut Vec<TokenEntry>) -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        let lock_path = self.path.with_extension("lock");
        if let Some(dir) = lock_path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let lock = crate::platform::fs::private_file()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| TokenError::Io {
                path: lock_path.clone(),
                source,
            })?;
        lock.lock().map_err(|source| TokenError::Io {
            path: lock_path.clone(),
            source,
        })?;
        let mut tokens = self.read()?;
        let out = f(&mut tokens)?;
        self.write(tokens)?;
        Ok(out)
    }

    /// The current entries, re-read when the file changed.
    fn entries(&self) -> Vec<TokenEntry> {
        let version = std::fs::metadata(&self.path).ok().map(|m| {
            (
                crate::platform::fs::identity(&m),
                m.len(),
                m.modified().ok(),
            )
        });
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != version || version.is_none() {
            match self.read() {
                Ok(t) => *cache = (version, t),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the token file; scoped tokens are refused");
                    // As the line says: not the entries of before, which may have been revoked.
                    *cache = (None, Vec::new());
                }
            }
        }
        cache.1.clone()
    }

    /// The identity of a presented scoped token, if it is live.
    pub fn authenticate(&self, presented: &str) -> Option<Identity> {
        let hash = sha256_hex(presented);
        let now = now();
        let mut found = None;
        // Compare against every entry, in constant time each, so timing says nothing.
        for e in self.entries() {
            if bool::from(e.sha256.as_bytes().ct_eq(hash.as_bytes())) && e.is_live(now) {
                found = Some(e);
            }
        }
        let e = found?;
        Some(Identity {
            instance: Some(e.sha256.chars().take(16).collect()),
            name: e.name,
            scopes: Some(e.scopes.iter().filter_map(|s| s.parse().ok()).collect()),
            container: e.container,
            ask: Vec::new(),
        })
    }

    /// Creates a token and returns it (the only time it is ever shown).
    pub fn issue(
        &self,
        name: &str,
        container: Option<String>,
        scopes: &[Scope],
        ttl: Option<Duration>,
    ) -> Result<String, TokenError> {
        if name.is_empty()
            || name.len() > 64
            || name == "user"
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(TokenError::BadName);
        }
        let token = clawker_protocol::hex(
            &crate::util::random_bytes::<32>().map_err(|_| TokenError::Random)?,
        );
        // An absurd --ttl must not wrap around into an already expired (or a panicking) time.
        let expires = match ttl {
            None => None,
            Some(t) => Some(
                now()
                    .checked_add(t.as_secs())
                    .ok_or(TokenError::TtlTooLong)?,
            ),
        };
        let entry = TokenEntry {
            name: name.to_string(),
            sha256: sha256_hex(&token),
            scopes: scopes.iter().map(ToString::to_string).collect(),
            container,
            created: now(),
            expires,
            revoked: false,
        };
        self.update(|tokens| {
            let now = now();
            if tokens.iter().any(|t| t.name == name && t.is_live(now)) {
                return Err(TokenError::Exists(name.to_string()));
            }
            tokens.retain(|t| t.name != name);
            tokens.push(entry);
            Ok(())
        })?;
        Ok(token)
    }

    pub fn list(&self) -> Result<Vec<TokenEntry>, TokenError> {
        self.read()
    }

    pub fn revoke(&self, name: &str) -> Result<(), TokenError> {
        self.update(|tokens| {
            let e = tokens
                .iter_mut()
                .find(|t| t.name == name)
                .ok_or_else(|| TokenError::NotFound(name.to_string()))?;
            e.revoked = true;
            Ok(())
        })
    }

    /// Revokes every token bound to this container (by id or name); returns how many.
    pub fn revoke_container(&self, id: &str, name: Option<&str>) -> Result<usize, TokenError> {
        let matches = |c: &str| {
            let c = c.trim_start_matches('/');
            (!c.is_empty() && (id.starts_with(c) || c.starts_with(id)))
                || name.is_some_and(|n| n.trim_start_matches('/') == c)
        };
        if !self
            .entries()
            .iter()
            .any(|t| !t.revoked && t.container.as_deref().is_some_and(matches))
        {
            return Ok(0);
        }
        self.update(|tokens| {
            let mut n = 0;
            for t in tokens
                .iter_mut()
                .filter(|t| !t.revoked && t.container.as_deref().is_some_and(matches))
            {
                t.revoked = true;
                n += 1;
            }
            Ok(n)
        })
    }

    /// Containers that live tokens are bound to.
    pub fn bound_containers(&self) -> Vec<String> {
        let now = now();
        self.entries()
            .into_iter()
            .filter(|t| t.is_live(now))
            .filter_map(|t| t.container)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absurd_ttl_is_refused_not_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path().join("tokens.json"));
        let e = store
            .issue(
                "t",
                None,
                &[Scope::Open],
                Some(Duration::from_secs(u64::MAX)),
            )
            .unwrap_err();
        assert!(matches!(e, TokenError::TtlTooLong), "{e}");
        assert!(store.list().unwrap().is_empty(), "nothing was written");
    }

    #[test]
    fn scopes_parse_and_print() {
        for s in [
            "open",
            "callback",
            "git:github.com",
            "git:*",
            "git-store:gitlab.example.com:8443",
            "ssh",
            "ssh:SHA256:abc",
        ] {
            assert_eq!(s.parse::<Scope>().unwrap().to_string(), s);
        }
        for bad in ["", "admin", "git:", "git:a b", "ssh:MD5:x", "ssh:SHA256:"] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
    }

    #[test]
    fn identity_checks() {
        let id = Identity {
            name: "t".into(),
            scopes: Some(
                ["git:github.com", "ssh:SHA256:k1"]
                    .iter()
                    .map(|s| s.parse().unwrap())
                    .collect(),
            ),
            container: None,
            ask: Vec::new(),
            instance: None,
        };
        assert!(id.may_git("GitHub.com", false));
        assert!(!id.may_git("github.com", true));
        assert!(!id.may_git("gitlab.com", false));
        assert!(!id.may_open() && !id.may_callback());
        assert!(id.may_ssh());
        assert_eq!(id.ssh_keys(), Some(["SHA256:k1".to_string()].into()));
        let user = Identity::user();
        assert!(user.may_open() && user.may_git("x", true) && user.ssh_keys().is_none());
    }

    #[test]
    fn a_token_file_that_cannot_be_read_refuses_every_token_not_the_cached_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path().join("tokens.json"));
        let t = store
            .issue("ci", None, &["open".parse().unwrap()], None)
            .unwrap();
        assert!(store.authenticate(&t).is_some());
        // The file changes into something unreadable (a half-written edit, a bad merge).
        std::fs::write(store.path(), b"{ not json").unwrap();
        assert!(store.authenticate(&t).is_none(), "the stale cache served");
        // Readable again: the tokens in it count again.
        let good = serde_json::json!({"tokens": []}).to_string();
        std::fs::write(store.path(), good).unwrap();
        assert!(store.authenticate(&t).is_none());
    }

    #[test]
    fn issue_authenticate_revoke_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path().join("tokens.json"));
        let t = store
            .issue(
                "ci",
                Some("abc123".into()),
                &["open".parse().unwrap()],
                None,
            )
            .unwrap();
        assert_eq!(t.len(), 64);
        assert!(
            !std::fs::read_to_string(store.path()).unwrap().contains(&t),
            "the token itself is never stored"
        );
        #[cfg(unix)]
        assert_eq!(
            crate::platform::fs::mode(&std::fs::metadata(store.path()).unwrap()),
            Some(0o600)
        );
        assert_eq!(store.authenticate(&t).unwrap().name, "ci");
        assert!(store.authenticate("nope").is_none());
        assert!(matches!(
            store.issue("ci", None, &[], None),
            Err(TokenError::Exists(_))
        ));
        assert!(matches!(
            store.issue("user", None, &[], None),
            Err(TokenError::BadName)
        ));
        assert_eq!(store.revoke_container("abc123ffff", None).unwrap(), 1);
        assert!(store.authenticate(&t).is_none());
        let t2 = store
            .issue("short", None, &[], Some(Duration::from_secs(0)))
            .unwrap();
        assert!(store.authenticate(&t2).is_none(), "expired");
        let t3 = store.issue("ci", None, &[], None).unwrap();
        assert!(
            store.authenticate(&t3).is_some(),
            "a revoked name can be issued again"
        );
        store.revoke("ci").unwrap();
        assert!(store.authenticate(&t3).is_none());
        assert!(matches!(
            store.revoke("nobody"),
            Err(TokenError::NotFound(_))
        ));
    }
}
