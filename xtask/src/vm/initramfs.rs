//! The guest's initramfs: static busybox, init.sh and the virtiofs modules the kernel lacks built in,
//! packed as a newc cpio archive at target/vm/<kernel>/initramfs.cpio.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use super::Kernel;

const INIT: &str = include_str!("init.sh");
/// From busybox-static (a dynamic busybox would need the host's libc inside the initramfs).
const BUSYBOX: &str = "/bin/busybox";
/// What virtiofs needs, in load order, as named in the kernel package's modules.builtin.
const VIRTIOFS_MODULES: [&str; 7] = [
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/fs/fuse/fuse.ko",
    "kernel/fs/fuse/virtiofs.ko",
];

/// Writes the kernel's initramfs if it is missing or stale and returns its path. Concurrent runs may
/// race here harmlessly: each writes identical bytes to its own file and renames it into place.
pub fn ensure(kernel: Kernel, kernel_dir: &Path) -> anyhow::Result<PathBuf> {
    let archive = pack(&kernel_dir.join("modules"))?;
    let dir = crate::project::target_dir().join("vm").join(kernel.name());
    let path = dir.join("initramfs.cpio");
    if std::fs::read(&path).is_ok_and(|existing| existing == archive) {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let partial = dir.join(format!("initramfs.cpio.{}", std::process::id()));
    std::fs::write(&partial, &archive).with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, &path)
        .with_context(|| format!("cannot rename {} into place", partial.display()))?;
    Ok(path)
}

fn pack(modules_root: &Path) -> anyhow::Result<Vec<u8>> {
    let busybox = std::fs::read(BUSYBOX)
        .with_context(|| format!("cannot read {BUSYBOX}: install busybox-static with `cargo xtask setup`"))?;
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "newroot", "hostview", "lib", "lib/modules"] {
        cpio.directory(dir);
    }
    // The kernel opens /dev/console for init's stdin/stdout before init can mount devtmpfs.
    cpio.char_device("dev/console", 5, 1);
    cpio.file("bin/busybox", 0o755, &busybox);
    cpio.file("init", 0o755, INIT.as_bytes());
    for (index, module) in modules_to_load(modules_root)?.into_iter().enumerate() {
        let name = module.file_name().and_then(|name| name.to_str()).unwrap_or("module.ko");
        let bytes = std::fs::read(&module).with_context(|| format!("cannot read {}", module.display()))?;
        cpio.file(&format!("lib/modules/{index}-{name}"), 0o644, &bytes);
    }
    Ok(cpio.finish())
}

/// The virtiofs modules the kernel does not build in, in load order.
fn modules_to_load(modules_root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let version_dir = only_subdirectory(modules_root)?;
    let builtin_path = version_dir.join("modules.builtin");
    let builtin = std::fs::read_to_string(&builtin_path)
        .with_context(|| format!("cannot read {} (re-run `cargo xtask setup`)", builtin_path.display()))?;
    let mut modules = Vec::new();
    for module in VIRTIOFS_MODULES {
        if builtin.lines().any(|line| line == module) {
            continue;
        }
        let path = version_dir.join(module);
        if !path.is_file() {
            bail!("the kernel neither builds in nor ships {} (looked for {})", module, path.display());
        }
        modules.push(path);
    }
    Ok(modules)
}

/// `modules/` holds one directory, named after the kernel release.
fn only_subdirectory(dir: &Path) -> anyhow::Result<PathBuf> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {} (re-run `cargo xtask setup`)", dir.display()))?;
    let mut subdirectories = Vec::new();
    for entry in entries {
        let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
        if path.is_dir() {
            subdirectories.push(path);
        }
    }
    match <[PathBuf; 1]>::try_from(subdirectories) {
        Ok([only]) => Ok(only),
        Err(found) => {
            bail!("expected one kernel release directory in {}, found {}", dir.display(), found.len())
        }
    }
}

/// A newc ("070701") cpio archive, the format the kernel unpacks into its initial rootfs.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    next_inode: u32,
}

impl Cpio {
    const DIRECTORY: u32 = 0o040_000;
    const REGULAR: u32 = 0o100_000;
    const CHAR_DEVICE: u32 = 0o020_000;

    fn directory(&mut self, path: &str) {
        self.entry(path, Self::DIRECTORY | 0o755, (0, 0), &[]);
    }

    fn file(&mut self, path: &str, permissions: u32, data: &[u8]) {
        self.entry(path, Self::REGULAR | permissions, (0, 0), data);
    }

    fn char_device(&mut self, path: &str, major: u32, minor: u32) {
        self.entry(path, Self::CHAR_DEVICE | 0o600, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.bytes
    }

    fn entry(&mut self, path: &str, mode: u32, (rdev_major, rdev_minor): (u32, u32), data: &[u8]) {
        self.next_inode += 1;
        let name_size = path.len() + 1;
        let fields = [
            self.next_inode,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime: fixed, so the archive only changes when its contents do
            u32::try_from(data.len()).unwrap_or(u32::MAX),
            0, // device major
            0, // device minor
            rdev_major,
            rdev_minor,
            u32::try_from(name_size).unwrap_or(u32::MAX),
            0, // checksum, unused by newc
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(path.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_newc_headers() -> anyhow::Result<()> {
        let mut cpio = Cpio::default();
        cpio.file("init", 0o755, b"#!/bin/sh\n");
        let bytes = cpio.finish();
        let header = std::str::from_utf8(&bytes[..110])?;
        assert_eq!(&header[..6], "070701", "magic");
        assert_eq!(&header[14..22], format!("{:08x}", Cpio::REGULAR | 0o755), "mode field");
        assert_eq!(&header[54..62], "0000000a", "file size field");
        assert_eq!(&header[94..102], "00000005", "name size includes the NUL");
        // 110-byte header + "init\0" padded to 116, then 10 data bytes padded to 128.
        assert_eq!(&bytes[110..115], b"init\0");
        assert_eq!(&bytes[116..126], b"#!/bin/sh\n");
        assert_eq!(&bytes[128..134], b"070701", "the trailer starts 4-aligned");
        assert_eq!(&bytes[128 + 110..128 + 121], b"TRAILER!!!\0");
        assert_eq!(bytes.len() % 4, 0);
        Ok(())
    }

    #[test]
    fn builtin_modules_are_skipped_and_missing_ones_reported() -> anyhow::Result<()> {
        let root = std::env::temp_dir().join(format!("xtask-modules-{}", std::process::id()));
        let release = root.join("6.99.0-test");
        std::fs::create_dir_all(release.join("kernel/fs/fuse"))?;
        let all_but_fuse: Vec<_> = VIRTIOFS_MODULES.iter().filter(|m| !m.contains("fuse")).copied().collect();
        std::fs::write(release.join("modules.builtin"), all_but_fuse.join("\n"))?;
        std::fs::write(release.join("kernel/fs/fuse/fuse.ko"), b"")?;

        let missing = modules_to_load(&root).map_err(|err| err.to_string());
        std::fs::write(release.join("kernel/fs/fuse/virtiofs.ko"), b"")?;
        let found = modules_to_load(&root);
        std::fs::remove_dir_all(&root)?;

        assert!(missing.is_err_and(|err| err.contains("virtiofs.ko")));
        assert_eq!(
            found?,
            vec![release.join("kernel/fs/fuse/fuse.ko"), release.join("kernel/fs/fuse/virtiofs.ko")]
        );
        Ok(())
    }
}
