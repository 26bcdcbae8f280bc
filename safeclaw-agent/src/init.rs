//! `safeclaw-agent init`: writes a starting `/etc/safeclaw/` (a shipped policy and a config naming
//! the default log, key and head) with root-only modes, never overwriting without `--force`, and
//! prints the next steps.
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};

/// The config `init` writes: every value is the built-in default, spelled out to be edited.
pub const CONFIG_TEMPLATE: &str = "\
# SafeClaw agent config (see `man safeclaw-agent` and docs/audit.md). Every setting is optional;
# the values below are the built-in defaults, written out to be edited.
audit:
  destinations:
    - type: file
      path: /var/log/safeclaw/audit.jsonl
  keyFile: /var/lib/safeclaw/audit.key
  headFile: /var/lib/safeclaw/audit.head
  # failClosed: while the log cannot be written, every agent action is denied.
  onWriteFailure: failClosed
  redaction:
    builtin: true
";

/// The shipped policy `init` starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Template {
    /// Deny by default; a coding agent works in ~/projects and friends.
    Default,
    /// Deny by default, less allowed.
    Strict,
    /// Allow everything, record everything: to learn what agents do before enforcing.
    AuditOnly,
}

impl Template {
    pub fn text(self) -> &'static str {
        match self {
            Template::Default => include_str!("../../policies/default.yaml"),
            Template::Strict => include_str!("../../policies/strict.yaml"),
            Template::AuditOnly => include_str!("../../policies/audit-only.yaml"),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Write under this directory instead of `/` (for images, packages and tests).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// The shipped policy to start from.
    #[arg(long, value_enum, default_value = "default")]
    pub policy: Template,
    /// Replace an existing policy.yaml and config.yaml.
    #[arg(long)]
    pub force: bool,
}

/// Root-only: the policy says what agents may not do, and the key signs the trail.
const PRIVATE_DIR: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let written = write_files(&args)?;
    for path in &written {
        println!("wrote {}", path.display());
    }
    println!(
        "\nNext steps:\n\
         1. sudo safeclaw-agent doctor                      # can this kernel enforce?\n\
         2. edit /etc/safeclaw/policy.yaml (the `workspace` rules), then\n   \
            sudo safeclaw-agent policy check /etc/safeclaw/policy.yaml\n\
         3. sudo systemctl enable --now safeclaw            # or: sudo safeclaw-agent run\n\
         4. safeclaw-agent exec --agent claude -- claude    # each agent in its own session\n\
         5. sudo safeclaw-agent audit tail -f               # and `audit verify` to check the trail"
    );
    Ok(ExitCode::SUCCESS)
}

/// Creates the directories and writes both files; refuses, changing nothing, if either exists and
/// `--force` was not given.
pub fn write_files(args: &InitArgs) -> anyhow::Result<Vec<PathBuf>> {
    let etc = args.root.join("etc/safeclaw");
    let files = [(etc.join("policy.yaml"), args.policy.text()), (etc.join("config.yaml"), CONFIG_TEMPLATE)];
    if !args.force {
        let existing: Vec<String> = files
            .iter()
            .filter(|(path, _)| path.exists())
            .map(|(path, _)| path.display().to_string())
            .collect();
        if !existing.is_empty() {
            bail!(
                "{} already exist(s); nothing was written (pass --force to replace)",
                existing.join(" and ")
            );
        }
    }
    for dir in [etc.clone(), args.root.join("var/lib/safeclaw"), args.root.join("var/log/safeclaw")] {
        private_dir(&dir)?;
    }
    for (path, text) in &files {
        replace_file(path, text)?;
    }
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // An existing directory keeps no wider mode than root-only.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR))
        .with_context(|| format!("cannot make {} root-only", dir.display()))
}

/// Writes `text` to a temporary file beside `path`, then renames it over: a reader never sees half.
fn replace_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let temporary = path.with_extension("yaml.new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE)
        .open(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot rename into {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn args(root: &Path, force: bool) -> InitArgs {
        InitArgs { root: root.to_owned(), policy: Template::Default, force }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn writes_a_valid_policy_and_config_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_files(&args(dir.path(), false)).unwrap();
        assert_eq!(written.len(), 2);
        let policy = dir.path().join("etc/safeclaw/policy.yaml");
        let config = dir.path().join("etc/safeclaw/config.yaml");
        crate::policy::load_file(&policy).unwrap();
        let parsed =
            crate::config::Config::parse(&std::fs::read_to_string(&config).unwrap(), &config).unwrap();
        assert_eq!(parsed.audit_log_path(None), PathBuf::from(crate::audit::DEFAULT_LOG));
        assert_eq!(parsed.key_path(), PathBuf::from(crate::audit::DEFAULT_KEY));
        assert_eq!(parsed.head_path(), PathBuf::from(crate::audit::DEFAULT_HEAD));
        assert_eq!((mode(&policy), mode(&config)), (0o600, 0o600));
        for sub in ["etc/safeclaw", "var/lib/safeclaw", "var/log/safeclaw"] {
            assert_eq!(mode(&dir.path().join(sub)), 0o700, "{sub}");
        }
    }

    #[test]
    fn never_overwrites_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("etc/safeclaw/config.yaml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, "audit: {}\n").unwrap();
        let e = write_files(&args(dir.path(), false)).unwrap_err().to_string();
        assert!(e.contains("config.yaml already exist") && e.contains("--force"), "{e}");
        assert_eq!(std::fs::read_to_string(&config).unwrap(), "audit: {}\n");
        assert!(!dir.path().join("etc/safeclaw/policy.yaml").exists(), "a refused init wrote the policy");
        write_files(&args(dir.path(), true)).unwrap();
        assert_eq!(std::fs::read_to_string(&config).unwrap(), CONFIG_TEMPLATE);
    }

    #[test]
    fn every_template_is_a_valid_policy() {
        for template in [Template::Default, Template::Strict, Template::AuditOnly] {
            crate::policy::load_str("template.yaml", template.text()).unwrap();
        }
    }
}
