//! The `hostproxy` command line as a user's shell meets it: printing commands in a pipe,
//! completion, flags checked before anything is asked, `run-flags` following the config.

use std::process::{Command, Output};

use e2e::*;

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// `completions` and `man` cut short by their reader (`| head -1`) end quietly, as `cat`
/// does: no panic, no "Broken pipe" message (the newcomer review's F14).
#[test]
fn printing_commands_end_quietly_when_the_reader_stops() {
    for args in ["completions fish", "completions bash", "man"] {
        for _ in 0..5 {
            let out = Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "'{}' {args} | head -c 1 > /dev/null; echo ${{PIPESTATUS[0]}}",
                    bin("hostproxy").display()
                ))
                .output()
                .unwrap();
            let status = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                status == "0" || status == "141",
                "{args}: exit {status}: {err}"
            );
            assert!(err.is_empty(), "{args}: {err}");
        }
    }
}

/// `run-flags` follows the config: the attach label is `attach.label`, and `--gpg` says the
/// host must grant gpg only when `attach.scopes` does not (SPEC.md 12; newcomer review).
#[test]
fn run_flags_follow_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("config/clawker");
    std::fs::create_dir_all(&conf).unwrap();
    let run_flags = || {
        let out = Command::new(bin("hostproxy"))
            .args(["run-flags", "--gpg", "--lines", "--no-mount"])
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("CLAWKER_STATE_DIR", dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    std::fs::write(
        conf.join("hostproxy.toml"),
        "[attach]\nlabel = \"team.agents=on\"\n",
    )
    .unwrap();
    let (flags, hint) = run_flags();
    let argv: Vec<&str> = flags.lines().collect();
    assert_eq!(argv[..2], ["--label", "team.agents=on"], "{flags}");
    assert!(argv.iter().any(|a| a.starts_with("GNUPGHOME=")), "{flags}");
    assert!(hint.contains("gpg scope"), "{hint}");
    std::fs::write(
        conf.join("hostproxy.toml"),
        "[attach]\nlabel = \"team.agents=on\"\nscopes = [\"open\", \"gpg\"]\n",
    )
    .unwrap();
    let (_, hint) = run_flags();
    assert!(hint.is_empty(), "{hint}");
}

/// Real bash, with the script `hostproxy completions bash` prints, completes `--allow` with
/// the scopes that need no name, not with file names (the newcomer review's F14).
#[test]
fn bash_completes_allow_with_scopes_not_file_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-file-here"), "").unwrap();
    for line in [
        "hostproxy attach --allow ",
        "hostproxy token issue --allow ",
    ] {
        let script = format!(
            "source <('{}' completions bash)\n\
             COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n\
             read -ra COMP_WORDS <<< \"$COMP_LINE\"; COMP_WORDS+=(''); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n\
             _hostproxy hostproxy '' --allow\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            bin("hostproxy").display()
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let offered = String::from_utf8_lossy(&out.stdout);
        let offered: Vec<&str> = offered.lines().collect();
        for scope in [
            "open",
            "callback",
            "notify",
            "git:*",
            "ssh",
            "ssh-login",
            "gpg",
        ] {
            assert!(offered.contains(&scope), "{line}: {offered:?}");
        }
        assert!(!offered.contains(&"a-file-here"), "{line}: {offered:?}");
    }
}

/// A mistyped scope is refused by the command line with the list of scopes, before the
/// daemon is asked: here there is none, and the answer is still about the scope.
#[test]
fn a_mistyped_scope_is_refused_before_anything_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["attach", "--container", "web", "--allow", "calback"][..],
        &["token", "issue", "--name", "ci", "--allow", "calback"][..],
    ] {
        let out = Command::new(bin("hostproxy"))
            .args(args)
            .env("CLAWKER_STATE_DIR", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .output()
            .unwrap();
        let said = text(&out);
        assert_eq!(out.status.code(), Some(2), "{said}");
        assert!(
            said.contains("'calback'") && said.contains("ssh-login"),
            "{said}"
        );
        assert!(!said.contains("daemon"), "the daemon was asked: {said}");
    }
    // Nothing was written: no token store, no state at all.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
