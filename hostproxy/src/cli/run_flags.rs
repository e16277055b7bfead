//! `hostproxy run-flags` (SPEC.md 6.1, 12): what a stock image needs from `docker run` to
//! be attached and to find the tools — the attach label (the config's), the tools' variables,
//! `PATH`, on the local engine a read-only mount of the daemon's own tools at
//! `/tmp/.hostproxy/bin` (there before the container's first command, and for `--read-only`
//! containers) — printed as one line, one argument per line, JSON, a compose service
//! fragment or a devcontainer.json fragment.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use clawker_protocol::tunnel::{self, RUN_FLAGS_GNUPGHOME, RUN_FLAGS_SSH_SOCK};
use hostproxy::config::AttachSettings;
use hostproxy::state::StateDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One line, quoted for a POSIX shell.
    Line,
    /// One argument per line (for `xargs -d '\n'`, `mapfile`).
    Lines,
    /// A JSON array of the arguments.
    Json,
    /// A docker compose service fragment (labels, environment, volumes).
    Compose,
    /// A devcontainer.json fragment (`runArgs`, `containerEnv`).
    Devcontainer,
}

#[derive(Debug, Clone, Args)]
pub struct RunFlagsArgs {
    #[command(flatten)]
    pub wire: WireArgs,
    /// How to print them.
    #[arg(long, value_enum, default_value_t = Format::Line)]
    pub format: Format,
    /// Short for --format lines.
    #[arg(long, conflicts_with = "format")]
    pub lines: bool,
}

/// What a container is wired for: shared by `run-flags` (which prints it) and `run` (which
/// creates the container with it).
#[derive(Debug, Clone, Args)]
pub struct WireArgs {
    /// Also wire gpg (GNUPGHOME). The container gets gpg only when the host grants the
    /// scope (`attach.scopes` or `attach --allow`): a label cannot widen what it gets.
    #[arg(long)]
    pub gpg: bool,
    /// Narrow this container's scopes to these (repeatable; a comma list works too): the
    /// scopes label, which can only take away from what the host grants.
    #[arg(long = "scope", value_name = "SCOPE", value_delimiter = ',')]
    pub scopes: Vec<String>,
    /// Say whether the container may send desktop notifications (`host-notify`, scope
    /// `notify`, which the host grants in `attach.scopes`).
    #[arg(long)]
    pub notify: bool,
    /// Do not mount the tools: the daemon copies them in when it attaches (remote engines
    /// always; the first command of the container may then run before they are there,
    /// unless `hostproxy run` copies them first).
    #[arg(long)]
    pub no_mount: bool,
    /// git over HTTPS to HOST through the daemon, which adds the host's credential (SPEC.md
    /// 13): `url.…insteadOf` for https://HOST/, and no credential helper for the daemon's
    /// URL (repeatable; HOST as git's credential host, with :PORT when not 443). The
    /// container needs the scopes git:HOST (fetch) and git-push:HOST (push).
    #[arg(long = "git-egress", value_name = "HOST")]
    pub git_egress: Vec<String>,
    /// A declared API upstream (`[[egress]] name = NAME` in the config; repeatable): its
    /// `env` variable set to the daemon's URL for it and its `key_env` to a placeholder, so
    /// an SDK in the container calls it through the daemon, which adds the real key. The
    /// container needs the scope egress:NAME.
    #[arg(long = "egress", value_name = "NAME")]
    pub egress: Vec<String>,
    /// The port the tools use inside the container.
    #[arg(long, default_value_t = clawker_protocol::DEFAULT_PORT)]
    pub port: u16,
}

/// `PATH` in the container: the tools first, then the usual places (Docker cannot add to
/// an image's `PATH`, only replace it; an image with tools elsewhere names them itself).
pub const CONTAINER_PATH: &str =
    "/tmp/.hostproxy/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The key an SDK in the container is given for a declared egress: not a secret (the daemon
/// drops it and adds the real one).
pub const EGRESS_PLACEHOLDER: &str = "hostproxy-placeholder-the-host-adds-the-key";

/// What the flags set, before they are printed in one format or another.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wiring {
    pub labels: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    /// `SOURCE:DEST:ro`.
    pub mounts: Vec<String>,
}

impl Wiring {
    /// The arguments of `docker run`, in order.
    pub fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (k, val) in &self.labels {
            v.extend(["--label".to_string(), format!("{k}={val}")]);
        }
        for (k, val) in &self.env {
            v.extend(["-e".to_string(), format!("{k}={val}")]);
        }
        for m in &self.mounts {
            v.extend(["-v".to_string(), m.clone()]);
        }
        v
    }

    pub fn render(&self, format: Format) -> Result<String> {
        let args = self.args();
        Ok(match format {
            Format::Line => args
                .iter()
                .map(|a| quote(a))
                .collect::<Result<Vec<_>>>()?
                .join(" "),
            Format::Lines => args.join("\n"),
            Format::Json => serde_json::to_string(&args)?,
            Format::Compose => {
                let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
                let mut y = String::from("labels:\n");
                for (k, v) in &self.labels {
                    y.push_str(&format!("  {}: {}\n", q(k), q(v)));
                }
                y.push_str("environment:\n");
                for (k, v) in &self.env {
                    y.push_str(&format!("  {}: {}\n", q(k), q(v)));
                }
                if !self.mounts.is_empty() {
                    y.push_str("volumes:\n");
                    for m in &self.mounts {
                        y.push_str(&format!("  - {}\n", q(m)));
                    }
                }
                y.trim_end().to_string()
            }
            Format::Devcontainer => {
                let mut run_args = Vec::new();
                for (k, v) in &self.labels {
                    run_args.extend(["--label".to_string(), format!("{k}={v}")]);
                }
                for m in &self.mounts {
                    run_args.extend(["-v".to_string(), m.clone()]);
                }
                let env: serde_json::Map<String, serde_json::Value> = self
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into()))
                    .collect();
                serde_json::to_string_pretty(
                    &serde_json::json!({ "runArgs": run_args, "containerEnv": env }),
                )?
            }
        })
    }
}

/// `arg` as a POSIX shell reads it back: as it is when it holds nothing a shell treats
/// specially, else quoted.
fn quote(arg: &str) -> Result<String> {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,@%+".contains(c));
    if plain {
        return Ok(arg.to_string());
    }
    Ok(shlex::try_quote(arg)
        .context("an argument cannot be quoted for a shell")?
        .into_owned())
}

/// The wiring for `args` under `attach` (the config's label and scopes); `tools`: the
/// daemon's tools folder to mount, if any.
pub fn wiring(
    args: &WireArgs,
    attach: &AttachSettings,
    egress: &[hostproxy::config::EgressDecl],
    tools: Option<PathBuf>,
) -> Result<Wiring> {
    let bin = tunnel::CONTAINER_BIN_DIR;
    let mut w = Wiring::default();
    w.labels.push(attach.label.clone());
    let scopes: Vec<&str> = args
        .scopes
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    for s in &scopes {
        s.parse::<hostproxy::auth::Scope>()
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("--scope {s}"))?;
    }
    if !scopes.is_empty() {
        w.labels
            .push((tunnel::SCOPES_LABEL.to_string(), scopes.join(",")));
    }
    let env = [
        (
            clawker_protocol::env::HOST_PROXY.to_string(),
            format!("http://127.0.0.1:{}", args.port),
        ),
        ("PATH".into(), CONTAINER_PATH.into()),
        ("BROWSER".into(), format!("{bin}/host-open")),
        ("SSH_AUTH_SOCK".into(), RUN_FLAGS_SSH_SOCK.into()),
        ("GIT_CONFIG_COUNT".into(), "1".into()),
        ("GIT_CONFIG_KEY_0".into(), "credential.helper".into()),
        (
            "GIT_CONFIG_VALUE_0".into(),
            format!("{bin}/git-credential-clawker"),
        ),
    ];
    w.env.extend(env);
    if !args.git_egress.is_empty() {
        let base = format!("http://127.0.0.1:{}", args.port);
        let mut entries = Vec::new();
        for h in &args.git_egress {
            let h = h.trim().to_ascii_lowercase();
            if !clawker_protocol::credential::is_valid_credential_host(&h) {
                bail!("--git-egress {h:?} is not a host (HOST or HOST:PORT)");
            }
            entries.push((
                format!("url.{base}/git/{h}/.insteadOf"),
                format!("https://{h}/"),
            ));
        }
        // git's helper list for the daemon's own URL, emptied: the container's git asks no
        // helper for what goes through egress (the daemon has the credential).
        entries.push((format!("credential.{base}.helper"), String::new()));
        let first = 1;
        for (i, (k, v)) in entries.into_iter().enumerate() {
            w.env.push((format!("GIT_CONFIG_KEY_{}", first + i), k));
            w.env.push((format!("GIT_CONFIG_VALUE_{}", first + i), v));
        }
        let count = first + args.git_egress.len() + 1;
        for (k, v) in w.env.iter_mut() {
            if k == "GIT_CONFIG_COUNT" {
                *v = count.to_string();
            }
        }
    }
    for name in &args.egress {
        let d = egress.iter().find(|d| &d.name == name).with_context(|| {
            format!("--egress {name}: no [[egress]] name = {name:?} in the daemon's config")
        })?;
        let Some(var) = &d.env else {
            bail!(
                "--egress {name}: its [[egress]] names no env variable for the base URL (env = \"…_BASE_URL\")"
            );
        };
        w.env.push((
            var.clone(),
            format!("http://127.0.0.1:{}/egress/{name}", args.port),
        ));
        if let Some(key) = &d.key_env {
            w.env.push((key.clone(), EGRESS_PLACEHOLDER.into()));
        }
    }
    if args.gpg {
        w.env.push(("GNUPGHOME".into(), RUN_FLAGS_GNUPGHOME.into()));
    }
    if let Some(dir) = tools {
        if dir.display().to_string().contains(':') {
            bail!(
                "the tools folder {} has a ':' in its path, which docker's -v cannot take: use --no-mount",
                dir.display()
            );
        }
        w.mounts.push(format!("{}:{bin}:ro", dir.display()));
    }
    Ok(w)
}

/// The daemon's tools for this host's architecture, when the engine is local (a mount of a
/// host folder means nothing to a remote engine); else why not, for stderr.
pub fn tools_to_mount(attach: &AttachSettings) -> Result<PathBuf, String> {
    let engine = hostproxy::platform::docker_host::find(
        &hostproxy::platform::docker_host::Env::from_process(),
    );
    if !hostproxy::platform::docker_host::is_local_owned(&engine.host) {
        return Err(format!(
            "the engine ({}) is not a local one of yours: the tools are copied in when the daemon attaches",
            engine.host
        ));
    }
    let state = StateDir::from_env().map_err(|e| e.to_string())?;
    let tools = hostproxy::tunnel::tools::Tools::new(attach.tools_dir.clone())
        .with_embedded(state.tools_dir());
    tools
        .dir_for(std::env::consts::ARCH)
        .map_err(|e| format!("{e:#}; the daemon cannot attach this image either"))
}

pub fn run_flags(args: RunFlagsArgs, settings: &hostproxy::config::Settings) -> Result<ExitCode> {
    let w = wire(&args.wire, settings)?;
    let format = if args.lines {
        Format::Lines
    } else {
        args.format
    };
    println!("{}", w.render(format)?);
    Ok(ExitCode::SUCCESS)
}

/// The wiring for `args` under the daemon's settings, with what the user should know (a
/// scope the host does not grant, no mount and why) said on stderr.
pub fn wire(args: &WireArgs, settings: &hostproxy::config::Settings) -> Result<Wiring> {
    let attach = &settings.attach;
    let granted = |scope: &str| attach.scopes.iter().any(|s| s.trim() == scope);
    if args.gpg && !granted("gpg") {
        eprintln!(
            "hostproxy: the container signs with gpg only when the daemon grants it the gpg scope (attach.scopes in the config, or attach --allow)"
        );
    }
    if args.notify && !granted("notify") {
        eprintln!(
            "hostproxy: host-notify works only when the daemon grants the notify scope (add \"notify\" to attach.scopes in the config, or attach --allow notify)"
        );
    }
    let tools = if args.no_mount {
        None
    } else {
        match tools_to_mount(attach) {
            Ok(dir) => Some(dir),
            Err(why) => {
                eprintln!("hostproxy: no tools mount: {why}");
                None
            }
        }
    };
    wiring(args, attach, &settings.egress, tools)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RunFlagsArgs,
    }

    fn parse(argv: &[&str]) -> RunFlagsArgs {
        Cli::parse_from(std::iter::once("run-flags").chain(argv.iter().copied())).args
    }

    fn args(argv: &[&str]) -> WireArgs {
        parse(argv).wire
    }

    fn attach() -> AttachSettings {
        AttachSettings {
            label: ("my.label".into(), "yes".into()),
            ..AttachSettings::default()
        }
    }

    #[test]
    fn every_format_says_the_same() {
        let w = wiring(
            &args(&["--scope", "open,git:github.com", "--gpg"]),
            &attach(),
            &[],
            Some(PathBuf::from("/state/tools/0.1.0/x86_64")),
        )
        .unwrap();
        let argv = w.args();
        assert_eq!(
            &argv[..4],
            [
                "--label",
                "my.label=yes",
                "--label",
                "dev.clawker.hostproxy.scopes=open,git:github.com"
            ]
        );
        assert!(argv.contains(&format!("PATH={CONTAINER_PATH}")));
        assert_eq!(
            argv.last().unwrap(),
            "/state/tools/0.1.0/x86_64:/tmp/.hostproxy/bin:ro"
        );
        assert_eq!(
            w.render(Format::Lines).unwrap().lines().collect::<Vec<_>>(),
            argv
        );
        let json: Vec<String> = serde_json::from_str(&w.render(Format::Json).unwrap()).unwrap();
        assert_eq!(json, argv);
        assert_eq!(
            shlex::split(&w.render(Format::Line).unwrap()).unwrap(),
            argv
        );
        let dc: serde_json::Value =
            serde_json::from_str(&w.render(Format::Devcontainer).unwrap()).unwrap();
        assert_eq!(dc["containerEnv"]["GNUPGHOME"], RUN_FLAGS_GNUPGHOME);
        assert_eq!(dc["runArgs"][1], "my.label=yes");
        let compose = w.render(Format::Compose).unwrap();
        assert!(compose.contains("  \"my.label\": \"yes\"\n"), "{compose}");
        assert!(
            compose.contains("volumes:\n  - \"/state/tools/0.1.0/x86_64:/tmp/.hostproxy/bin:ro\""),
            "{compose}"
        );
    }

    #[test]
    fn a_bad_scope_is_refused_and_lines_is_short_for_the_format() {
        let e = wiring(&args(&["--scope", "opn"]), &attach(), &[], None).unwrap_err();
        assert!(format!("{e:#}").contains("--scope opn"), "{e:#}");
        assert!(parse(&["--lines"]).lines);
        assert!(Cli::try_parse_from(["run-flags", "--lines", "--format", "json"]).is_err());
    }
}
