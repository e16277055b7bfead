//! `cargo xtask test`'s check that every declared dependency is used (the maintainer review
//! found 14 that were not): a dependency's crate name must appear as a word in its package's
//! Rust sources (`src/`, `tests/`, `benches/`, `examples/`, `build.rs`) — the same test
//! cargo-machete makes, without installing it. A dependency needed only for its features or
//! its link (none today) is named in `[package.metadata.xtask] used = ["name"]`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The dependency tables of a manifest, plain and per target.
fn declared(manifest: &toml::Table) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut tables = vec![manifest];
    if let Some(targets) = manifest.get("target").and_then(|t| t.as_table()) {
        tables.extend(targets.values().filter_map(|t| t.as_table()));
    }
    for t in tables {
        for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
            if let Some(deps) = t.get(kind).and_then(|d| d.as_table()) {
                out.extend(deps.keys().map(|k| (kind.to_string(), k.clone())));
            }
        }
    }
    out
}

/// Whether `word` appears in `text` with no identifier character on either side.
fn has_word(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        !text[..i].chars().next_back().is_some_and(ident)
            && !text[i + word.len()..].chars().next().is_some_and(ident)
    })
}

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && p.file_name().is_some_and(|n| n != "target") {
            rust_sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every workspace member's declared dependencies that its sources never name.
pub fn unused(root: &Path, members: &[&str]) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for m in members {
        let dir = root.join(m);
        let text = std::fs::read_to_string(dir.join("Cargo.toml"))
            .with_context(|| format!("cannot read {m}/Cargo.toml"))?;
        let manifest: toml::Table =
            toml::from_str(&text).with_context(|| format!("{m}/Cargo.toml"))?;
        let allowed: Vec<String> = manifest
            .get("package")
            .and_then(|p| p.get("metadata"))
            .and_then(|p| p.get("xtask"))
            .and_then(|x| x.get("used"))
            .and_then(|u| u.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut files = Vec::new();
        for sub in ["src", "tests", "benches", "examples", "fuzz_targets"] {
            rust_sources(&dir.join(sub), &mut files);
        }
        if dir.join("build.rs").is_file() {
            files.push(dir.join("build.rs"));
        }
        let sources: String = files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect::<Vec<_>>()
            .join("\n");
        for (kind, name) in declared(&manifest) {
            if allowed.contains(&name) {
                continue;
            }
            if !has_word(&sources, &name.replace('-', "_")) {
                found.push(format!("{m}: {kind} {name}"));
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// The workspace's members, from its manifest.
fn members(root: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let manifest: toml::Table = toml::from_str(&text).context("Cargo.toml")?;
    Ok(manifest
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .context("Cargo.toml has no workspace.members")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect())
}

/// Fails naming each unused dependency of the workspace's members.
pub fn check(root: &Path) -> Result<()> {
    let members = members(root)?;
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    let unused = unused(root, &members)?;
    if !unused.is_empty() {
        bail!(
            "declared but never used (remove them, or name one in [package.metadata.xtask] used):\n  {}",
            unused.join("\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_not_parts_of_words() {
        assert!(has_word("use tokio::net;", "tokio"));
        assert!(!has_word("use tokio_util::codec;", "tokio"));
        assert!(!has_word("let my_serde = 1;", "serde"));
        assert!(has_word("#[derive(serde::Serialize)]", "serde"));
    }

    #[test]
    fn every_table_is_read() {
        let m: toml::Table = toml::from_str(
            "[dependencies]\na = 1\n[dev-dependencies]\nb = 1\n[target.'cfg(unix)'.dependencies]\nc = 1\n",
        )
        .unwrap();
        let names: Vec<String> = declared(&m).into_iter().map(|(_, n)| n).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
