//! escape-probe subcommands that change a file without opening it for write, reach it by a path
//! that does not lead to it from the root, or map its code without an exec (tests/tests/escape/
//! changes.rs, paths.rs, exec_map.rs).
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;

use super::{check, cstring, open, parse, Outcome};

pub const USAGE: &str = "open-trunc PATH | truncate PATH | unlink PATH | rmdir PATH | symlink TARGET LINK \
| mkdir PATH | chmod PATH OCTAL | chown PATH UID GID | setxattr PATH NAME VALUE | fsetxattr PATH NAME VALUE \
| removexattr PATH NAME | setfcap PATH | setfacl PATH | unlink-reopen PATH | open-tree-reopen DIR NAME | chroot DIR | mmap-exec PATH | mprotect-exec PATH";

const COMMANDS: [&str; 18] = [
    "open-trunc",
    "truncate",
    "unlink",
    "rmdir",
    "symlink",
    "mkdir",
    "chmod",
    "chown",
    "setxattr",
    "fsetxattr",
    "removexattr",
    "setfcap",
    "setfacl",
    "unlink-reopen",
    "open-tree-reopen",
    "chroot",
    "mmap-exec",
    "mprotect-exec",
];

/// Whether `cmd` is one of these subcommands.
pub fn handles(cmd: &OsStr) -> bool {
    COMMANDS.iter().any(|known| cmd == *known)
}

/// Runs subcommand `cmd` (see `handles`) on `args`.
pub fn run(cmd: &OsStr, args: &[&OsStr]) -> Outcome {
    // SAFETY (every arm): plain syscalls on valid C strings.
    match (cmd.to_str().unwrap_or_default(), args) {
        ("open-trunc", [path]) => open(path, libc::O_RDONLY | libc::O_TRUNC),
        ("truncate", [path]) => check(unsafe { libc::truncate(cstring(path).as_ptr(), 0) }),
        ("unlink", [path]) => check(unsafe { libc::unlink(cstring(path).as_ptr()) }),
        ("rmdir", [path]) => check(unsafe { libc::rmdir(cstring(path).as_ptr()) }),
        ("symlink", [target, link]) => {
            check(unsafe { libc::symlink(cstring(target).as_ptr(), cstring(link).as_ptr()) })
        }
        ("mkdir", [path]) => check(unsafe { libc::mkdir(cstring(path).as_ptr(), 0o755) }),
        ("chmod", [path, mode]) => {
            let mode = u32::from_str_radix(parse::<String>(mode).as_str(), 8)
                .unwrap_or_else(|_| super::fail("the mode is not octal"));
            check(unsafe { libc::chmod(cstring(path).as_ptr(), mode) })
        }
        ("chown", [path, uid, gid]) => check(unsafe {
            libc::chown(cstring(path).as_ptr(), parse::<i32>(uid) as u32, parse::<i32>(gid) as u32)
        }),
        ("setxattr", [path, name, value]) => check(unsafe {
            let value = value.as_bytes();
            libc::setxattr(
                cstring(path).as_ptr(),
                cstring(name).as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        }),
        ("fsetxattr", [path, name, value]) => fsetxattr(path, name, value.as_bytes()),
        ("removexattr", [path, name]) => {
            check(unsafe { libc::removexattr(cstring(path).as_ptr(), cstring(name).as_ptr()) })
        }
        ("setfcap", [path]) => setfcap(path),
        ("setfacl", [path]) => setfacl(path),
        ("unlink-reopen", [path]) => unlink_reopen(path),
        ("open-tree-reopen", [dir, name]) => open_tree_reopen(dir, name),
        ("chroot", [dir]) => check(unsafe { libc::chroot(cstring(dir).as_ptr()) }),
        ("mmap-exec", [path]) => map_code(path, false),
        ("mprotect-exec", [path]) => map_code(path, true),
        _ => super::fail(&format!("usage: {USAGE}")),
    }
}

/// Holds the file by an O_PATH descriptor, unlinks its name, and reopens it through /proc/self/fd:
/// the open's path is the last name plus ` (deleted)`.
fn unlink_reopen(path: &OsStr) -> Outcome {
    // SAFETY: plain syscalls on a valid C string and our own descriptor.
    let fd = unsafe { libc::open(cstring(path).as_ptr(), libc::O_PATH) };
    check(fd)?;
    check(unsafe { libc::unlink(cstring(path).as_ptr()) })?;
    open(OsStr::new(&format!("/proc/self/fd/{fd}")), libc::O_RDONLY)
}

/// Clones the mount tree at `dir` into a detached mount (`open_tree(OPEN_TREE_CLONE)`, root only) and
/// opens `name` in it: the open's path is relative to the clone's root.
fn open_tree_reopen(dir: &OsStr, name: &OsStr) -> Outcome {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    // SAFETY: open_tree with a valid C string; returns a descriptor or -1.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            cstring(dir).as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    } as i32;
    check(tree)?;
    // SAFETY: openat on our descriptor and a valid C string.
    check(unsafe { libc::openat(tree, cstring(name).as_ptr(), libc::O_RDONLY) })
}

/// Maps the first page of `path` executable, as a loader maps a binary's code: directly, or (with
/// `later`) readable first and made executable with mprotect.
fn map_code(path: &OsStr, later: bool) -> Outcome {
    // SAFETY: plain syscalls on a valid C string, our own descriptor and our own fresh mapping.
    unsafe {
        let fd = libc::open(cstring(path).as_ptr(), libc::O_RDONLY);
        check(fd)?;
        let prot = if later { libc::PROT_READ } else { libc::PROT_READ | libc::PROT_EXEC };
        let map = libc::mmap(std::ptr::null_mut(), 4096, prot, libc::MAP_PRIVATE, fd, 0);
        if map == libc::MAP_FAILED {
            return Err(super::last_errno());
        }
        if later {
            check(libc::mprotect(map, 4096, libc::PROT_READ | libc::PROT_EXEC))?;
        }
        Ok(())
    }
}

/// Sets an extended attribute through a descriptor opened read-only: no open for write.
fn fsetxattr(path: &OsStr, name: &OsStr, value: &[u8]) -> Outcome {
    // SAFETY: plain syscalls on valid C strings, our own descriptor and a live buffer.
    unsafe {
        let fd = libc::open(cstring(path).as_ptr(), libc::O_RDONLY);
        check(fd)?;
        check(libc::fsetxattr(fd, cstring(name).as_ptr(), value.as_ptr().cast(), value.len(), 0))
    }
}

/// Gives the file a capability (`security.capability`, a valid revision-2 `vfs_cap_data`:
/// CAP_NET_RAW permitted and effective), as `setcap cap_net_raw+ep` would. Root only.
fn setfcap(path: &OsStr) -> Outcome {
    const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
    const VFS_CAP_FLAGS_EFFECTIVE: u32 = 1;
    const CAP_NET_RAW: u32 = 13;
    let mut value = Vec::with_capacity(20);
    for word in [VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE, 1 << CAP_NET_RAW, 0, 0, 0] {
        value.extend_from_slice(&word.to_le_bytes());
    }
    let name = c"security.capability";
    // SAFETY: a valid C string, a live buffer.
    check(unsafe {
        libc::setxattr(cstring(path).as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0)
    })
}

/// Gives root read and write access by a POSIX access ACL (`setfacl -m u:root:rw`), as the file's
/// owner may: `system.posix_acl_access` in the kernel's xattr format.
fn setfacl(path: &OsStr) -> Outcome {
    const VERSION: u32 = 2;
    const UNDEFINED_ID: u32 = u32::MAX;
    // (tag, permissions, id), in the order the kernel requires.
    let entries: [(u16, u16, u32); 5] = [
        (0x01, 6, UNDEFINED_ID),
        (0x02, 6, 0),
        (0x04, 4, UNDEFINED_ID),
        (0x10, 6, UNDEFINED_ID),
        (0x20, 4, UNDEFINED_ID),
    ];
    let mut value = VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        value.extend_from_slice(&tag.to_le_bytes());
        value.extend_from_slice(&perm.to_le_bytes());
        value.extend_from_slice(&id.to_le_bytes());
    }
    let name = c"system.posix_acl_access";
    // SAFETY: a valid C string, a live buffer.
    check(unsafe {
        libc::setxattr(cstring(path).as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0)
    })
}
