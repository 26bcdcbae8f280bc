//! cgroup v2: finding the mount, validating names, creating the agent cgroup, and its id and depth.
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup name {name:?} is not allowed: {why} (use letters, digits, '.', '_' or '-', at most 64, not starting with '.')")]
    BadName { name: String, why: &'static str },
    #[error("no cgroup v2 filesystem is mounted (looked in /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup`")]
    NoMount,
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(std::io::Error),
    #[error("cannot create cgroup {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot stat cgroup {path}: {source}")]
    Stat { path: PathBuf, source: std::io::Error },
}

/// Checks one cgroup path component (an agent or cgroup name given by a user).
pub fn validate_name(name: &str) -> Result<(), CgroupError> {
    let bad = |why| Err(CgroupError::BadName { name: name.to_string(), why });
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 64 {
        return bad("it is longer than 64 bytes");
    }
    if name.starts_with('.') {
        return bad("it starts with '.' (this includes '..')");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return bad("it contains a character other than letters, digits, '.', '_' or '-' (such as '/')");
    }
    Ok(())
}

/// Where cgroup2 is mounted, and how deep the mounted directory sits in the hierarchy (0 unless the
/// mount shows a sub-cgroup, as inside a cgroup namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub path: PathBuf,
    pub root_depth: u32,
}

/// The cgroup2 mount, from `mountinfo` text (hybrid hosts mount it at /sys/fs/cgroup/unified).
pub fn find_mount_in(mountinfo: &str) -> Option<Mount> {
    mountinfo.lines().find_map(|line| {
        // "36 25 0:30 / /sys/fs/cgroup rw,... shared:9 - cgroup2 cgroup2 rw,..."
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mut fields = left.split_whitespace();
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        let root_depth = root.split('/').filter(|c| !c.is_empty()).count() as u32;
        (fstype == "cgroup2").then(|| Mount { path: PathBuf::from(unescape_octal(mount_point)), root_depth })
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let value = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn find_mount() -> Result<Mount, CgroupError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountInfo)?;
    find_mount_in(&text).ok_or(CgroupError::NoMount)
}

/// A cgroup directory with the id and depth the eBPF scope check needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    pub path: PathBuf,
    /// The cgroup id: the directory's inode number on cgroup2.
    pub id: u64,
    /// Depth below the cgroup2 root (the root is 0).
    pub level: u32,
}

/// Opens `name` directly under the mount, creating it if missing; `true` if it was created.
pub fn ensure(mount: &Mount, name: &str) -> Result<(Cgroup, bool), CgroupError> {
    validate_name(name)?;
    let path = mount.path.join(name);
    let created = match std::fs::create_dir(&path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(source) => return Err(CgroupError::Create { path, source }),
    };
    let meta = std::fs::metadata(&path).map_err(|source| CgroupError::Stat { path: path.clone(), source })?;
    Ok((Cgroup { path, id: meta.ino(), level: mount.root_depth + 1 }, created))
}

/// Whether process `pid` sits in `cgroup` or below it, by its cgroup2 path as this process's cgroup
/// namespace shows it. An error when its cgroup cannot be read (gone, or no cgroup2 line): callers
/// that decide on it refuse on doubt.
pub fn process_is_in(pid: i32, cgroup: &std::path::Path) -> Result<bool, String> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("cannot read the cgroup of pid {pid}: {e}"))?;
    let relative = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(|| format!("pid {pid} has no cgroup2 membership in /proc/{pid}/cgroup"))?;
    let mount = find_mount().map_err(|e| e.to_string())?;
    Ok(mount.path.join(relative.trim_start_matches('/')).starts_with(cgroup))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_slash_or_dots_are_refused() {
        for bad in ["", "a/b", "..", ".hidden", "../etc", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["agents", "claude-code", "codex_1", "a.b"] {
            validate_name(good).unwrap();
        }
    }

    #[test]
    fn finds_hybrid_and_unified_mounts() {
        let hybrid = "25 1 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n\
                      27 25 0:25 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        let mount = |path: &str, root_depth| Some(Mount { path: PathBuf::from(path), root_depth });
        assert_eq!(find_mount_in(hybrid), mount("/sys/fs/cgroup/unified", 0));
        let unified = "30 1 0:26 / /sys/fs/cgroup rw,nosuid,nodev shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(find_mount_in(unified), mount("/sys/fs/cgroup", 0));
        let escaped = "30 1 0:26 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(find_mount_in(escaped), mount("/mnt/my cg", 0));
        let namespaced = "30 1 0:26 /system.slice/x /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(find_mount_in(namespaced), mount("/sys/fs/cgroup", 2));
        assert_eq!(find_mount_in("30 1 0:26 / /sys rw - sysfs sysfs rw\n"), None);
    }
}
