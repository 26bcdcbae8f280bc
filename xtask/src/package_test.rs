//! The package's tests, run by `cargo xtask test` on the host: its file list and modes, the unit
//! under `systemd-analyze verify`, and install, upgrade and purge in a scratch dpkg root (maintainer
//! scripts run chrootless with DPKG_ROOT) keeping the audit log and key.
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context as _};

use crate::package::{self, COMPLETIONS, NAME, POLICIES, UNIT};

/// One named check and its outcome.
pub type Outcome = (&'static str, anyhow::Result<()>);

/// Builds the package around `agent` (and a later version of it), then runs every check.
pub fn run(agent: &Path) -> Vec<Outcome> {
    let out = crate::project::target_dir().join("package-test");
    let built = std::fs::remove_dir_all(&out)
        .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
        .context("cannot clear target/package-test")
        .and_then(|()| {
            let version = package::version()?;
            let first = package::build(agent, &version, &out.join("v1"))?;
            let upgrade = package::build(agent, &format!("{version}+upgrade1"), &out.join("v2"))?;
            Ok((first, upgrade))
        });
    let (first, upgrade) = match built {
        Ok(debs) => debs,
        Err(e) => return vec![("package builds", Err(e))],
    };
    let root = out.join("root");
    vec![
        ("package builds", Ok(())),
        ("package file list and modes", file_list(&first)),
        ("install, upgrade and purge keep the log and key", lifecycle(&first, &upgrade, &root)),
    ]
}

/// `dpkg-deb -c`: every file the package must hold, with its mode, owned by root, and nothing under
/// /etc or /var (those are the operator's and the daemon's).
fn file_list(deb: &Path) -> anyhow::Result<()> {
    let listing = output(Command::new("dpkg-deb").arg("-c").arg(deb))?;
    let mut entries = std::collections::BTreeMap::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        ensure!(fields.len() >= 6, "unexpected dpkg-deb -c line: {line}");
        ensure!(fields[1] == "root/root", "not owned by root: {line}");
        let path = fields[5].trim_start_matches("./").trim_end_matches('/').to_owned();
        ensure!(!path.starts_with("etc") && !path.starts_with("var"), "the package ships {path}");
        entries.insert(path, fields[0].to_owned());
    }
    let mut expected: Vec<(String, &str)> = vec![
        (format!("usr/bin/{NAME}"), "-rwxr-xr-x"),
        (UNIT.to_owned(), "-rw-r--r--"),
        ("usr/share/man/man1/safeclaw-agent.1.gz".to_owned(), "-rw-r--r--"),
        ("usr/share/man/man1/safeclaw-agent-init.1.gz".to_owned(), "-rw-r--r--"),
        ("usr/share/man/man1/safeclaw-agent-policy-check.1.gz".to_owned(), "-rw-r--r--"),
    ];
    expected.extend(POLICIES.iter().map(|p| (format!("usr/share/safeclaw/policies/{p}"), "-rw-r--r--")));
    expected.extend(COMPLETIONS.iter().map(|(_, path)| (path.to_string(), "-rw-r--r--")));
    for (path, mode) in expected {
        match entries.get(&path) {
            Some(found) => ensure!(found == mode, "{path} has mode {found}, expected {mode}"),
            None => bail!("the package lacks {path}; it holds:\n{listing}"),
        }
    }
    Ok(())
}

/// Installs, upgrades and purges in `root`, checking what each step must leave in place.
fn lifecycle(first: &Path, upgrade: &Path, root: &Path) -> anyhow::Result<()> {
    let admin = root.join("var/lib/dpkg");
    for dir in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(dir))?;
    }
    std::fs::write(admin.join("status"), "")?;
    std::fs::write(admin.join("available"), "")?;
    let dpkg = |args: &[&str], deb: Option<&Path>| -> anyhow::Result<String> {
        let mut command = Command::new("dpkg");
        command
            .arg(format!("--root={}", root.display()))
            .args(["--force-script-chrootless", "--force-depends", "--log=/dev/null"])
            .args(args);
        if let Some(deb) = deb {
            command.arg(deb);
        }
        output(&mut command)
    };

    dpkg(&["--install"], Some(first))?;
    let policy = root.join("etc/safeclaw/policy.yaml");
    let config = root.join("etc/safeclaw/config.yaml");
    for (path, mode) in [
        (policy.clone(), 0o600),
        (config.clone(), 0o600),
        (root.join("etc/safeclaw"), 0o700),
        (root.join("var/lib/safeclaw"), 0o700),
        (root.join("var/log/safeclaw"), 0o700),
    ] {
        ensure!(
            mode_of(&path)? == mode,
            "{} has mode {:o} after install, expected {mode:o}",
            path.display(),
            mode_of(&path)?
        );
    }
    verify_unit(root)?;

    // What a running daemon and an operator leave: a log, a key, an edited policy.
    let evidence = [
        (root.join("var/log/safeclaw/audit.jsonl"), "{\"sequence\":0}\n"),
        (root.join("var/log/safeclaw/audit-00000000000000000000.jsonl.zst"), "segment"),
        (root.join("var/lib/safeclaw/audit.key"), "key"),
        (root.join("var/lib/safeclaw/audit.head"), "head"),
    ];
    for (path, text) in &evidence {
        std::fs::write(path, text)?;
    }
    let edited = format!("{}\n# edited by the operator\n", std::fs::read_to_string(&policy)?);
    std::fs::write(&policy, &edited)?;

    dpkg(&["--install"], Some(upgrade))?;
    ensure!(std::fs::read_to_string(&policy)? == edited, "the upgrade replaced the operator's policy");
    check_evidence(root, &evidence, "upgrade")?;

    dpkg(&["--remove", NAME], None)?;
    check_evidence(root, &evidence, "remove")?;
    ensure!(policy.exists(), "remove (not purge) deleted the policy");
    dpkg(&["--purge", NAME], None)?;
    check_evidence(root, &evidence, "purge")?;
    ensure!(!policy.exists() && !config.exists(), "purge left the policy and config");
    ensure!(!root.join("usr/bin").join(NAME).exists(), "purge left the binary");
    Ok(())
}

fn check_evidence(root: &Path, evidence: &[(PathBuf, &str)], step: &str) -> anyhow::Result<()> {
    for (path, text) in evidence {
        let found =
            std::fs::read_to_string(path).with_context(|| format!("{step} deleted {}", path.display()))?;
        ensure!(found == *text, "{step} changed {}", path.display());
    }
    for dir in ["var/lib/safeclaw", "var/log/safeclaw"] {
        ensure!(mode_of(&root.join(dir))? == 0o700, "{dir} is not root-only after {step}");
    }
    Ok(())
}

/// `systemd-analyze verify` of the installed unit, with its commands pointed at the scratch root's
/// binary and `man` at its pages (`--root` would also look for sysinit.target there).
fn verify_unit(root: &Path) -> anyhow::Result<()> {
    let binary = root.join("usr/bin").join(NAME);
    let unit = std::fs::read_to_string(root.join(UNIT))?
        .replace(&format!("/usr/bin/{NAME}"), &binary.to_string_lossy());
    let dir = root.parent().context("the scratch root has no parent")?.join("unit");
    std::fs::create_dir_all(&dir)?;
    let copy = dir.join("safeclaw.service");
    std::fs::write(&copy, unit)?;
    let result = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .env("MANPATH", root.join("usr/share/man"))
        .output()
        .context("cannot run systemd-analyze (package systemd)")?;
    let said =
        format!("{}{}", String::from_utf8_lossy(&result.stdout), String::from_utf8_lossy(&result.stderr));
    ensure!(result.status.success() && said.trim().is_empty(), "systemd-analyze verify {UNIT}: {said}");
    Ok(())
}

fn mode_of(path: &Path) -> anyhow::Result<u32> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("{} is missing", path.display()))?
        .permissions()
        .mode()
        & 0o7777)
}

fn output(command: &mut Command) -> anyhow::Result<String> {
    let result = command.output().with_context(|| format!("cannot run {command:?}"))?;
    let stdout = String::from_utf8_lossy(&result.stdout).into_owned();
    if !result.status.success() {
        bail!("{command:?} failed ({}): {stdout}{}", result.status, String::from_utf8_lossy(&result.stderr));
    }
    Ok(stdout)
}
