//! Records what `fleetwake --version` reports beyond the version: the git
//! commit the binary was built from (from `FLEETWAKE_GIT_COMMIT` when set, as
//! the Dockerfile does, else `git rev-parse`, else `unknown`: a build from a
//! published crate has no repository).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=FLEETWAKE_GIT_COMMIT");
    for path in [".git/HEAD", ".git/index"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let from_env = std::env::var("FLEETWAKE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty());
    let commit = from_env
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FLEETWAKE_GIT_COMMIT={commit}");
}

/// The short commit, with `-dirty` when the work tree has changes.
fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut commit = String::from_utf8(out.stdout).ok()?.trim().to_string();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    if dirty {
        commit.push_str("-dirty");
    }
    (!commit.is_empty()).then_some(commit)
}
