//! `cargo xtask package`: the Debian package (built with dpkg-deb): the release agent, the systemd
//! unit, the shipped policies, man pages, shell completions and the maintainer scripts in deploy/.
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _};

use crate::{cargo, project};

/// The package's name, and so its binary's.
pub const NAME: &str = "safeclaw-agent";
/// Installed files and their modes, from the checkout (`None` for generated ones, listed for the test).
pub const UNIT: &str = "lib/systemd/system/safeclaw.service";
pub const POLICIES: [&str; 3] = ["default.yaml", "strict.yaml", "audit-only.yaml"];
pub const MAINTAINER_SCRIPTS: [&str; 3] = ["postinst", "prerm", "postrm"];
pub const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "usr/share/bash-completion/completions/safeclaw-agent"),
    ("zsh", "usr/share/zsh/vendor-completions/_safeclaw-agent"),
    ("fish", "usr/share/fish/vendor_completions.d/safeclaw-agent.fish"),
];

#[derive(clap::Args)]
pub struct PackageArgs {
    /// Directory for the .deb [default: target/package].
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: PackageArgs) -> anyhow::Result<ExitCode> {
    project::setup()?;
    let agent = cargo::build_release_agent()?;
    let out = args.out.unwrap_or_else(|| project::target_dir().join("package"));
    let deb = build(&agent, &version()?, &out)?;
    println!("{}", deb.display());
    Ok(ExitCode::SUCCESS)
}

/// The agent crate's version, which the package carries.
pub fn version() -> anyhow::Result<String> {
    let manifest = project::root().join("safeclaw-agent/Cargo.toml");
    let text =
        std::fs::read_to_string(&manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix("version = \"").and_then(|rest| rest.strip_suffix('"')))
        .map(str::to_owned)
        .with_context(|| format!("{} names no version", manifest.display()))
}

/// Builds `safeclaw-agent_VERSION_amd64.deb` in `out` around the binary `agent`; returns its path.
pub fn build(agent: &Path, version: &str, out: &Path) -> anyhow::Result<PathBuf> {
    let staging = out.join(format!("{NAME}_{version}"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).with_context(|| format!("cannot clear {}", staging.display()))?;
    }
    let root = project::root();
    install(agent, &staging.join("usr/bin").join(NAME), 0o755)?;
    install(&root.join("deploy/systemd/safeclaw.service"), &staging.join(UNIT), 0o644)?;
    for policy in POLICIES {
        install(
            &root.join("policies").join(policy),
            &staging.join("usr/share/safeclaw/policies").join(policy),
            0o644,
        )?;
    }
    install(&root.join("README.md"), &staging.join("usr/share/doc").join(NAME).join("README.md"), 0o644)?;
    let man_dir = staging.join("usr/share/man/man1");
    run_quiet(Command::new(agent).arg("manpages").arg("--out").arg(&man_dir), "safeclaw-agent manpages")?;
    for page in std::fs::read_dir(&man_dir)? {
        run_quiet(Command::new("gzip").args(["-9n"]).arg(page?.path()), "gzip")?;
    }
    for (shell, path) in COMPLETIONS {
        let output = Command::new(agent)
            .args(["completions", shell])
            .output()
            .context("safeclaw-agent completions")?;
        if !output.status.success() {
            bail!("safeclaw-agent completions {shell} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        write(&staging.join(path), &output.stdout, 0o644)?;
    }
    let debian = staging.join("DEBIAN");
    for script in MAINTAINER_SCRIPTS {
        install(&root.join("deploy/debian").join(script), &debian.join(script), 0o755)?;
    }
    write(&debian.join("control"), control(version).as_bytes(), 0o644)?;
    set_directory_modes(&staging)?;
    let deb = out.join(format!("{NAME}_{version}_amd64.deb"));
    run_quiet(
        Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "--build"]).arg(&staging).arg(&deb),
        "dpkg-deb --build",
    )?;
    Ok(deb)
}

fn control(version: &str) -> String {
    format!(
        "Package: {NAME}\n\
         Version: {version}\n\
         Architecture: amd64\n\
         Maintainer: SafeClaw developers <safeclaw@localhost>\n\
         Section: admin\n\
         Priority: optional\n\
         Depends: libc6 (>= 2.36)\n\
         Recommends: systemd\n\
         Description: kernel-enforced policy and a tamper-evident audit trail for AI agents\n \
         BPF LSM programs decide every file open, exec and connect of the processes in a tagged\n \
         agent cgroup; a daemon records each decision in a hash-chained, Ed25519-checkpointed log.\n"
    )
}

fn install(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    write(to, &bytes, mode)
}

fn write(to: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(to, bytes).with_context(|| format!("cannot write {}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", to.display()))
}

/// Every directory 0755 whatever the umask (dpkg-deb refuses a DEBIAN directory with other modes).
fn set_directory_modes(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            set_directory_modes(&path)?;
        }
    }
    Ok(())
}

fn run_quiet(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
