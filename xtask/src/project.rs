//! Where things live (the checkout, its target directory, the kernel cache) and the setup script.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

/// The checkout this xtask was built from: the guest's working directory and the base of every relative path.
pub fn root() -> &'static Path {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask)
}

pub fn target_dir() -> PathBuf {
    root().join("target")
}

/// Where setup.sh unpacks the kernels; xtask passes it to setup.sh so both always agree.
pub fn vm_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("SAFECLAW_VM_CACHE") {
        return PathBuf::from(dir);
    }
    let cache =
        std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| home().join(".cache"));
    cache.join("safeclaw").join("vm")
}

pub fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

/// Runs xtask/setup.sh, which installs only what is missing (well under a second when all is present).
pub fn setup() -> anyhow::Result<()> {
    let script = root().join("xtask").join("setup.sh");
    let status = Command::new("bash")
        .arg(&script)
        .env("SAFECLAW_VM_CACHE", vm_cache())
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run bash {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status}); its messages above say which step", script.display());
    }
    Ok(())
}
