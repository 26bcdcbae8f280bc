//! escape-probe subcommands that change a file without opening it for write, reach it by a path
//! that does not lead to it from the root, or map its code without an exec (tests/tests/
//! escape_changes.rs, escape_paths.rs, escape_exec_map.rs).
use std::ffi::OsStr;

use super::{check, cstring, open, parse, Outcome};

pub const USAGE: &str = "open-trunc PATH | truncate PATH | unlink PATH | rmdir PATH | symlink TARGET LINK \
| mkdir PATH | chmod PATH OCTAL | chown PATH UID GID | unlink-reopen PATH | open-tree-reopen DIR NAME | chroot DIR | mmap-exec PATH | mprotect-exec PATH";

const COMMANDS: [&str; 13] = [
    "open-trunc",
    "truncate",
    "unlink",
    "rmdir",
    "symlink",
    "mkdir",
    "chmod",
    "chown",
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
