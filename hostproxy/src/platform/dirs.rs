//! Where the user's files are: the home directory, the state and config bases. Unix follows
//! XDG (`~/.local/state`, `~/.config`); Windows keeps state in `%LOCALAPPDATA%` and config
//! in `%APPDATA%` unless the XDG variables are set.

use std::path::PathBuf;

fn var(key: &str) -> Option<PathBuf> {
    std::env::var_os(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `HOME`, else (Windows) `USERPROFILE`.
pub fn home() -> Option<PathBuf> {
    var("HOME").or_else(|| {
        if cfg!(windows) {
            var("USERPROFILE")
        } else {
            None
        }
    })
}

/// The base the state directory `clawker` goes in: `$XDG_STATE_HOME`, else `%LOCALAPPDATA%`
/// on Windows, else `~/.local/state`.
pub fn state_base() -> Option<PathBuf> {
    var("XDG_STATE_HOME")
        .or_else(|| {
            if cfg!(windows) {
                var("LOCALAPPDATA")
            } else {
                None
            }
        })
        .or_else(|| home().map(|h| h.join(".local").join("state")))
}

/// The base the config directory `clawker` goes in: `$XDG_CONFIG_HOME`, else `%APPDATA%` on
/// Windows, else `~/.config`.
pub fn config_base() -> Option<PathBuf> {
    var("XDG_CONFIG_HOME")
        .or_else(|| if cfg!(windows) { var("APPDATA") } else { None })
        .or_else(|| home().map(|h| h.join(".config")))
}

/// The docker CLI's config directory: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn docker_config() -> Option<PathBuf> {
    var("DOCKER_CONFIG").or_else(|| home().map(|h| h.join(".docker")))
}
