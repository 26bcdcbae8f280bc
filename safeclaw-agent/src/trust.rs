//! Reading the files the daemon takes its orders from (the policy, its includes, the config): never
//! through a symbolic link, and only if nobody but root can change the file or any directory above it.
//!
//! The path is walked from `/` one component at a time with `O_NOFOLLOW`, each directory checked on
//! the descriptor that was opened (no check-then-open race), and the file opened `O_NOFOLLOW` from
//! its directory's descriptor. A link planted anywhere on the way, a file or directory owned by
//! someone else or writable by group or others (a directory with the sticky bit excepted: there only
//! an entry's owner may replace it) is refused with the path and the cause.
use std::io::Read as _;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{0}: not an absolute path")]
    Relative(PathBuf),
    #[error("{0} is a symbolic link: the daemon does not follow links to its policy or config (name the file itself, or a path without links)")]
    Link(PathBuf),
    #[error(
        "{path} is owned by uid {uid}, not root: whoever owns it could rewrite what the daemon enforces"
    )]
    Owner { path: PathBuf, uid: u32 },
    #[error(
        "{path} is writable by its group or by others (mode {mode:04o}): only root may be able to change it"
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error("{0} is not a regular file")]
    NotFile(PathBuf),
    #[error("{0} is not a directory")]
    NotDirectory(PathBuf),
    #[error("{0} is larger than {1} bytes")]
    TooLarge(PathBuf, u64),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// `path` with `.` and `..` resolved by name. Exact for the walk below, which refuses every link.
fn lexical(path: &Path) -> Result<Vec<&std::ffi::OsStr>, TrustError> {
    if !path.is_absolute() {
        return Err(TrustError::Relative(path.to_path_buf()));
    }
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => parts.push(name),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(parts)
}

/// The bytes of `path` (at most `max`), once it and every directory above it passed the checks.
pub fn read(path: &Path, max: u64) -> Result<Vec<u8>, TrustError> {
    let mut parts = lexical(path)?;
    let name = parts.pop().ok_or_else(|| TrustError::NotFile(path.to_path_buf()))?;
    let mut at = PathBuf::from("/");
    let io = |at: &Path, source: nix::Error| TrustError::Io { path: at.to_path_buf(), source: source.into() };
    let mut dir: OwnedFd =
        nix::fcntl::open(&at, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| io(&at, e))?;
    check_directory(&dir, &at)?;
    for part in parts {
        at.push(part);
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        dir = match nix::fcntl::openat(dir.as_fd(), part, flags, Mode::empty()) {
            Ok(next) => next,
            Err(nix::errno::Errno::ENOTDIR | nix::errno::Errno::ELOOP) => {
                return Err(if is_link(&dir, part) {
                    TrustError::Link(at)
                } else {
                    TrustError::NotDirectory(at)
                })
            }
            Err(e) => return Err(io(&at, e)),
        };
        check_directory(&dir, &at)?;
    }
    at.push(name);
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let file = match nix::fcntl::openat(dir.as_fd(), name, flags, Mode::empty()) {
        Ok(file) => file,
        Err(nix::errno::Errno::ELOOP) => return Err(TrustError::Link(at)),
        Err(e) => return Err(io(&at, e)),
    };
    let stat = nix::sys::stat::fstat(&file).map_err(|e| io(&at, e))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(TrustError::NotFile(at));
    }
    check_owner_and_mode(&stat, &at, false)?;
    let mut bytes = Vec::new();
    std::fs::File::from(file)
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| TrustError::Io { path: at.clone(), source })?;
    if bytes.len() as u64 > max {
        return Err(TrustError::TooLarge(at, max));
    }
    Ok(bytes)
}

fn is_link(dir: &OwnedFd, name: &std::ffi::OsStr) -> bool {
    nix::sys::stat::fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|stat| SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
}

fn check_directory(dir: &OwnedFd, path: &Path) -> Result<(), TrustError> {
    let stat = nix::sys::stat::fstat(dir)
        .map_err(|e| TrustError::Io { path: path.to_path_buf(), source: e.into() })?;
    check_owner_and_mode(&stat, path, true)
}

fn check_owner_and_mode(stat: &FileStat, path: &Path, directory: bool) -> Result<(), TrustError> {
    if stat.st_uid != 0 {
        return Err(TrustError::Owner { path: path.to_path_buf(), uid: stat.st_uid });
    }
    let mode = stat.st_mode & 0o7777;
    let sticky = directory && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Err(TrustError::Writable { path: path.to_path_buf(), mode });
    }
    Ok(())
}

/// `path` with the links in its directories resolved now, and its last component kept as named: what
/// the daemon reads from then on is where the configured path pointed at startup, and a link planted
/// later is refused by [`read`], never followed.
pub fn resolve_at_startup(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir).map_or(absolute.clone(), |dir| dir.join(name)),
        _ => absolute,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn reads_only_root_owned_files_without_links_or_loose_directories() {
        assert!(nix::unistd::geteuid().is_root(), "this test changes file owners: run it as root");
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let policy = base.join("policy.yaml");
        std::fs::write(&policy, "version: 1\n").unwrap();
        mode(&policy, 0o644);
        assert_eq!(read(&policy, 100).unwrap(), b"version: 1\n");
        assert_eq!(read(&base.join("sub/../policy.yaml"), 100).unwrap(), b"version: 1\n");
        assert!(matches!(read(&policy, 4), Err(TrustError::TooLarge(..))));
        assert!(matches!(read(Path::new("policy.yaml"), 100), Err(TrustError::Relative(_))));

        // The policy swapped for a link to a file the agent wrote.
        let planted = base.join("planted.yaml");
        std::fs::write(&planted, "version: 1\ndefault: allow\n").unwrap();
        let link = base.join("link.yaml");
        std::os::unix::fs::symlink(&planted, &link).unwrap();
        let e = read(&link, 100).unwrap_err();
        assert!(e.to_string().starts_with(&format!("{} is a symbolic link", link.display())), "{e}");

        // A directory on the way replaced by a link.
        let real = base.join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("p.yaml"), "x").unwrap();
        std::os::unix::fs::symlink(&real, base.join("alias")).unwrap();
        let e = read(&base.join("alias/p.yaml"), 100).unwrap_err();
        assert!(matches!(&e, TrustError::Link(p) if p.ends_with("alias")), "{e}");

        // Someone else's file, a group-writable file, a world-writable directory.
        std::os::unix::fs::chown(&planted, Some(65534), None).unwrap();
        let e = read(&planted, 100).unwrap_err();
        assert!(e.to_string().contains("is owned by uid 65534, not root"), "{e}");
        std::os::unix::fs::chown(&planted, Some(0), None).unwrap();
        mode(&planted, 0o664);
        let e = read(&planted, 100).unwrap_err();
        assert!(e.to_string().contains("writable by its group or by others (mode 0664)"), "{e}");
        mode(&real, 0o777);
        assert!(
            matches!(read(&real.join("p.yaml"), 100), Err(TrustError::Writable { path, .. }) if path == real)
        );
        mode(&real, 0o1777);
        read(&real.join("p.yaml"), 100).expect("a sticky directory lets nobody replace root's file");
        std::os::unix::fs::chown(&real, Some(65534), None).unwrap();
        assert!(matches!(read(&real.join("p.yaml"), 100), Err(TrustError::Owner { uid: 65534, .. })));

        assert!(matches!(read(base, 100), Err(TrustError::NotFile(_))));
        assert!(matches!(read(&base.join("missing"), 100), Err(TrustError::Io { .. })));
    }

    #[test]
    fn startup_resolves_directory_links_but_not_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("alias")).unwrap();
        let resolved = resolve_at_startup(&dir.path().join("alias/policy.yaml"));
        assert_eq!(resolved, std::fs::canonicalize(&real).unwrap().join("policy.yaml"));
    }
}
