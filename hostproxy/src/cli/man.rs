//! `hostproxy man`: the manual pages. The top page is clap's with ENVIRONMENT and FILES
//! sections of ours; `--dir DIR` also writes a page per subcommand (`hostproxy-serve.1`,
//! …), which the top page refers to.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// What the top page says beyond the options.
const EXTRA: &str = r#".SH ENVIRONMENT
.TP
\fBCLAWKER_HOST_PROXY_CONFIG\fR
The config file (\fB\-\-config\fR); default \fI$XDG_CONFIG_HOME/clawker/hostproxy.toml\fR.
.TP
\fBCLAWKER_STATE_DIR\fR
The state directory; default \fI~/.local/state/clawker\fR.
.TP
\fBCLAWKER_HOST_PROXY_PORT\fR, \fBCLAWKER_HOST_PROXY_LISTEN\fR, \fBCLAWKER_HOST_PROXY_BROWSER\fR
As \fBserve \-\-port\fR, \fB\-\-listen\fR, \fB\-\-browser\fR.
.TP
\fBSSH_AUTH_SOCK\fR
The host's ssh\-agent that containers may use (scope \fBssh\fR); gpg\-agent is gpgconf's agent\-extra\-socket.
.TP
\fBDOCKER_HOST\fR
The engine, found as the docker CLI finds it (then the current docker context).
.SH FILES
.TP
\fI<state>/hostproxy.token\fR
The user's bearer token for the TCP lane (0600).
.TP
\fI<state>/hostproxy.sock\fR
The control socket of \fBattach\fR, \fBdetach\fR, \fBapprovals\fR (this user only).
.TP
\fI<state>/logs/hostproxy.log\fR, \fI<state>/logs/audit.jsonl\fR
The daemon's log and every decision it made (rotated at 10 MiB).
.TP
\fI<state>/sessions.json\fR, \fI<state>/attachments.json\fR
OAuth callback sessions and containers attached by hand, kept across restarts.
.TP
\fI<state>/tools/<version>/\fR
The container tools this hostproxy carries, unpacked (read\-only, mounted by \fBrun\-flags\fR).
.SH SEE ALSO
\fBhostproxy\-serve\fR(1), \fBhostproxy\-run\-flags\fR(1), \fBhostproxy\-attach\fR(1), \fBhostproxy\-doctor\fR(1)
"#;

/// The top page.
pub fn top(cmd: clap::Command, w: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd);
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;
    w.write_all(EXTRA.as_bytes())?;
    man.render_version_section(w)
}

/// Every page into `dir`: one per subcommand, then the top page over clap's own.
pub fn write_all(cmd: clap::Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(cmd.clone(), dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    let mut page = Vec::new();
    top(cmd, &mut page)?;
    std::fs::write(dir.join("hostproxy.1"), page)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_top_page_has_environment_and_files_and_every_subcommand_a_page() {
        let mut page = Vec::new();
        top(crate::cli::Cli::command(), &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        for s in [
            ".SH ENVIRONMENT",
            ".SH FILES",
            "CLAWKER_STATE_DIR",
            ".SH SUBCOMMANDS",
        ] {
            assert!(page.contains(s), "{s}");
        }
        let dir = tempfile::tempdir().unwrap();
        write_all(crate::cli::Cli::command(), dir.path()).unwrap();
        for sub in [
            "hostproxy-serve.1",
            "hostproxy-run-flags.1",
            "hostproxy-token-issue.1",
        ] {
            assert!(dir.path().join(sub).is_file(), "{sub}");
        }
        let top = std::fs::read_to_string(dir.path().join("hostproxy.1")).unwrap();
        assert!(top.contains(".SH FILES"));
    }
}
