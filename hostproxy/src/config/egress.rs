//! `[[egress]]`: API upstreams a container calls through the daemon, which adds the secret
//! (SPEC.md 13).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, parse_duration};

/// One `[[egress]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressFile {
    pub name: String,
    /// `https://api.example.com` (a path prefix allowed, no query).
    pub upstream: String,
    /// The header the secret goes in (`x-api-key`); or `bearer = true`.
    pub header: Option<String>,
    #[serde(default)]
    pub bearer: bool,
    pub secret: SecretFile,
    /// Methods allowed (default: any).
    pub methods: Option<Vec<String>>,
    /// Paths allowed, exact or ending in `*` for a prefix (default: any).
    pub paths: Option<Vec<String>>,
    /// The container variable `run-flags --egress NAME` sets to the base URL.
    pub env: Option<String>,
    /// The container variable `run-flags --egress NAME` sets to a placeholder key (SDKs
    /// insist on one).
    pub key_env: Option<String>,
    /// A private CA (PEM) for this upstream, besides the host's roots.
    pub ca_file: Option<PathBuf>,
    /// Requests a minute per container (default 600; 0: no limit).
    pub rate_per_minute: Option<u32>,
}

/// `secret.env`, `secret.file` or `secret.command` (+ `secret.ttl`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretFile {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
    pub command: Option<Vec<String>>,
    pub ttl: Option<String>,
}

/// Where a secret comes from, read when a request needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A variable of the daemon's own environment.
    Env(String),
    /// A file's contents (a trailing newline dropped).
    File(PathBuf),
    /// A program's output (argv, no shell), kept for `ttl`.
    Command { argv: Vec<String>, ttl: Duration },
}

/// Where the secret goes on the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretHeader {
    /// `NAME: secret`.
    Named(http::HeaderName),
    /// `Authorization: Bearer secret`.
    Bearer,
}

/// One `[[egress]]`, checked.
#[derive(Debug, Clone)]
pub struct EgressDecl {
    pub name: String,
    /// Scheme `https`, no query; its path (without a trailing `/`) prefixes every request's.
    pub upstream: url::Url,
    pub header: SecretHeader,
    pub secret: SecretSource,
    pub methods: Option<Vec<http::Method>>,
    pub paths: Option<Vec<String>>,
    pub env: Option<String>,
    pub key_env: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// Requests a minute per container (0: no limit).
    pub rate_per_minute: u32,
}

/// Headers the secret may not be put in: they mean something else to HTTP.
const NOT_A_SECRET_HEADER: &[&str] = &[
    "host",
    "connection",
    "content-length",
    "content-type",
    "transfer-encoding",
    "te",
    "upgrade",
    "cookie",
];

fn bad(key: &'static str, message: String) -> ConfigError {
    ConfigError::Value { key, message }
}

impl EgressDecl {
    pub fn from_file(f: &EgressFile) -> Result<Self, ConfigError> {
        let name = &f.name;
        if !clawker_protocol::tunnel::is_socket_name(name) {
            return Err(bad(
                "egress.name",
                format!("{name:?} is not a name (letters, digits, '-', '_', '.')"),
            ));
        }
        let upstream = url::Url::parse(&f.upstream)
            .ok()
            .filter(|u| {
                u.scheme() == "https"
                    && u.host().is_some()
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.query().is_none()
                    && u.fragment().is_none()
            })
            .ok_or_else(|| {
                bad(
                    "egress.upstream",
                    format!(
                        "{name}: {:?} is not an https:// URL without credentials or query",
                        f.upstream
                    ),
                )
            })?;
        let header = match (&f.header, f.bearer) {
            (Some(h), false) => {
                let h = http::HeaderName::from_bytes(h.trim().as_bytes())
                    .ok()
                    .filter(|h| !NOT_A_SECRET_HEADER.contains(&h.as_str()))
                    .ok_or_else(|| {
                        bad(
                            "egress.header",
                            format!("{name}: {h:?} cannot carry the secret"),
                        )
                    })?;
                if h == http::header::AUTHORIZATION {
                    return Err(bad(
                        "egress.header",
                        format!("{name}: for Authorization use bearer = true"),
                    ));
                }
                SecretHeader::Named(h)
            }
            (None, true) => SecretHeader::Bearer,
            _ => {
                return Err(bad(
                    "egress.header",
                    format!("{name}: give either header = \"NAME\" or bearer = true"),
                ));
            }
        };
        let s = &f.secret;
        let secret = match (&s.env, &s.file, &s.command) {
            (Some(v), None, None) => SecretSource::Env(v.clone()),
            (None, Some(p), None) if p.is_absolute() || p.starts_with("~") => {
                SecretSource::File(match p.strip_prefix("~") {
                    Ok(rest) => crate::platform::dirs::home()
                        .ok_or_else(|| bad("egress.secret.file", "HOME is not set".into()))?
                        .join(rest),
                    Err(_) => p.clone(),
                })
            }
            (None, None, Some(argv)) if !argv.is_empty() && !argv[0].is_empty() => {
                let ttl = match &s.ttl {
                    Some(t) => parse_duration(t).map_err(|m| bad("egress.secret.ttl", m))?,
                    None => Duration::from_secs(300),
                };
                SecretSource::Command {
                    argv: argv.clone(),
                    ttl,
                }
            }
            _ => {
                return Err(bad(
                    "egress.secret",
                    format!(
                        "{name}: give exactly one of secret.env = \"VAR\", secret.file = \"/abs/path\", secret.command = [\"prog\", \"arg\"]"
                    ),
                ));
            }
        };
        let methods = f
            .methods
            .as_ref()
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        http::Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                            .map_err(|_| bad("egress.methods", format!("{name}: {m:?}")))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        if let Some(paths) = &f.paths
            && let Some(p) = paths
                .iter()
                .find(|p| !p.starts_with('/') || p.contains(['?', '#']) || p.contains(".."))
        {
            return Err(bad(
                "egress.paths",
                format!("{name}: {p:?} is not a path (/v1/messages, or /v1/* for a prefix)"),
            ));
        }
        for (key, v) in [("egress.env", &f.env), ("egress.key_env", &f.key_env)] {
            if let Some(v) = v
                && (v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            {
                return Err(bad(key, format!("{name}: {v:?} is not a variable name")));
            }
        }
        Ok(Self {
            name: name.clone(),
            upstream,
            header,
            secret,
            methods,
            paths: f.paths.clone(),
            env: f.env.clone(),
            key_env: f.key_env.clone(),
            ca_file: f.ca_file.clone(),
            rate_per_minute: f.rate_per_minute.unwrap_or(600),
        })
    }

    /// Whether `method` and `path` (the part after `/egress/NAME`) are declared.
    pub fn allows(&self, method: &http::Method, path: &str) -> bool {
        self.methods.as_ref().is_none_or(|ms| ms.contains(method))
            && self.paths.as_ref().is_none_or(|ps| {
                ps.iter().any(|p| match p.strip_suffix('*') {
                    Some(prefix) => path.starts_with(prefix),
                    None => path == p,
                })
            })
    }
}

/// `[[egress]]`, checked; names unique.
pub fn egress(files: &[EgressFile]) -> Result<Vec<EgressDecl>, ConfigError> {
    let mut out: Vec<EgressDecl> = Vec::new();
    for f in files {
        let d = EgressDecl::from_file(f)?;
        if out.iter().any(|o| o.name == d.name) {
            return Err(bad(
                "egress.name",
                format!("{:?} is declared twice", d.name),
            ));
        }
        out.push(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Vec<EgressDecl>, ConfigError> {
        #[derive(Deserialize)]
        struct F {
            egress: Vec<EgressFile>,
        }
        egress(&toml::from_str::<F>(toml_text).unwrap().egress)
    }

    #[test]
    fn a_declaration_resolves_and_its_lists_decide() {
        let d = parse(
            "[[egress]]\nname = \"anthropic\"\nupstream = \"https://api.anthropic.com\"\nheader = \"x-api-key\"\nsecret.env = \"ANTHROPIC_API_KEY\"\nmethods = [\"post\"]\npaths = [\"/v1/messages\", \"/v1/models*\"]\nenv = \"ANTHROPIC_BASE_URL\"\n",
        )
        .unwrap();
        let a = &d[0];
        assert!(a.allows(&http::Method::POST, "/v1/messages"));
        assert!(a.allows(&http::Method::POST, "/v1/models/x"));
        assert!(!a.allows(&http::Method::GET, "/v1/messages"));
        assert!(!a.allows(&http::Method::POST, "/v1/messages/batches"));
    }

    #[test]
    fn what_could_leak_or_silently_misroute_is_refused() {
        for bad in [
            "upstream = \"http://api.example.com\"\nbearer = true\nsecret.env = \"K\"",
            "upstream = \"https://u:p@api.example.com\"\nbearer = true\nsecret.env = \"K\"",
            "upstream = \"https://api.example.com\"\nsecret.env = \"K\"",
            "upstream = \"https://api.example.com\"\nheader = \"x\"\nbearer = true\nsecret.env = \"K\"",
            "upstream = \"https://api.example.com\"\nheader = \"authorization\"\nsecret.env = \"K\"",
            "upstream = \"https://api.example.com\"\nheader = \"host\"\nsecret.env = \"K\"",
            "upstream = \"https://api.example.com\"\nbearer = true\nsecret.env = \"K\"\nsecret.file = \"/k\"",
            "upstream = \"https://api.example.com\"\nbearer = true\nsecret.file = \"relative\"",
            "upstream = \"https://api.example.com\"\nbearer = true\nsecret.env = \"K\"\npaths = [\"v1\"]",
            "upstream = \"https://api.example.com\"\nbearer = true\nsecret.env = \"K\"\nenv = \"A B\"",
        ] {
            assert!(
                parse(&format!("[[egress]]\nname = \"x\"\n{bad}\n")).is_err(),
                "{bad}"
            );
        }
    }
}
