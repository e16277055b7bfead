//! `hostproxy serve`: flags, then environment (clap's `env`), then the config file, then
//! defaults, resolved into `daemon::Options`. The other subcommands resolve the same way.

use std::path::Path;

use anyhow::{Result, bail};
use hostproxy::config::{
    FileConfig, Settings, default_config_path, parse_label, split_command, watcher_from_file,
};
use hostproxy::daemon::Options;
use hostproxy::state::StateDir;

use super::{PortArg, ServeArgs};

/// The config file: the one named (it must exist), else the default path (if present).
fn file(config: Option<&Path>) -> Result<FileConfig> {
    Ok(match config {
        Some(p) => FileConfig::load(p, true)?,
        None => match default_config_path() {
            Some(p) => FileConfig::load(&p, false)?,
            None => FileConfig::default(),
        },
    })
}

/// The settings of the config file (or the defaults), before any `serve` flag.
pub fn settings(config: Option<&Path>) -> Result<Settings> {
    Ok(Settings::from_file(&file(config)?)?)
}

/// The port a subcommand means: its flag (or `CLAWKER_HOST_PROXY_PORT`), else the config's.
pub fn port(arg: &PortArg, config: Option<&Path>) -> Result<u16> {
    Ok(match arg.port {
        Some(p) => p,
        None => settings(config)?.port,
    })
}

/// The daemon's runtime: two workers (the daemon is I/O-bound and small).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// What `serve` runs with.
pub fn options(args: &ServeArgs, config: Option<&Path>) -> Result<Options> {
    Ok(Options {
        settings: resolve_settings(args, &file(config)?)?,
        state_dir: StateDir::from_env()?,
        explicit_listen: !args.listen.is_empty(),
        banner: true,
    })
}

/// Resolves settings: flags, then environment (clap's `env`), then the file, then defaults.
fn resolve_settings(args: &ServeArgs, file: &FileConfig) -> Result<Settings> {
    let mut s = Settings::from_file(file)?;
    if let Some(p) = args.port.port {
        s.port = p;
    }
    if !args.listen.is_empty() {
        s.listen = args.listen.clone();
    }
    if let Some(b) = &args.browser {
        s.browser = split_command(b);
        if s.browser.is_none() {
            bail!("--browser is empty: give a command such as xdg-open");
        }
    }
    if let Some(n) = &args.notifier {
        s.notifier = split_command(n);
        if s.notifier.is_none() {
            bail!("--notifier is empty: give a command such as notify-send");
        }
    }
    if let Some(a) = &args.approver {
        s.approval.approver = split_command(a);
        if s.approval.approver.is_none() {
            bail!("--approver is empty: give a command");
        }
    }
    if let Some(l) = &args.attach_label {
        s.attach.label = parse_label(l)
            .ok_or_else(|| anyhow::anyhow!("--attach-label {l:?} is not KEY=VALUE"))?;
    }
    if args.no_attach {
        s.attach.enabled = false;
    }
    if let Some(d) = &args.tools_dir {
        s.attach.tools_dir = Some(d.clone());
    }
    s.no_auth |= args.no_auth;
    s.listen_docker_bridge |= args.listen_docker_bridge;
    if args.idle_exit {
        let mut w = watcher_from_file(&file.watcher)?;
        if let Some(g) = args.grace_period {
            w.grace_period = g;
        }
        if let Some(p) = args.poll_interval {
            w.poll_interval = p;
        }
        s.watcher = Some(w);
    }
    Ok(s)
}
