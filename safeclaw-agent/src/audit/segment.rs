//! Segment files: naming (`audit.jsonl` active, `audit-<first sequence>.jsonl[.zst|.gz]` rotated), listing a
//! log's segments in order, reading them through decompression, and compressing rotated ones.
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::durable;

/// How rotated segments are compressed (`rotation.compress`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    None,
    #[default]
    Zstd,
    Gzip,
}

impl Compression {
    fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zst",
            Compression::Gzip => ".gz",
        }
    }

    /// The codec of a file, from its first bytes (the zstd and gzip magic numbers), not its name: a
    /// segment recompressed with the other codec under its old name still reads.
    pub fn of_content(path: &Path) -> io::Result<Self> {
        let mut magic = [0u8; 4];
        let mut file = File::open(path)?;
        let mut filled = 0;
        while filled < magic.len() {
            match file.read(&mut magic[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(Self::of_magic(&magic[..filled]))
    }

    fn of_magic(magic: &[u8]) -> Self {
        if magic.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else if magic.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else {
            Compression::None
        }
    }
}

/// First bytes of a zstd frame (RFC 8878) and of a gzip member (RFC 1952).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Digits of the first sequence number in a rotated segment's name.
const SEQ_DIGITS: usize = 20;

/// The active segment's name split as `<stem>.<ext>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogName {
    dir: PathBuf,
    stem: String,
    ext: String,
}

impl LogName {
    pub fn of_active(active: &Path) -> Self {
        let file = active.file_name().unwrap_or_default().to_string_lossy();
        let (stem, ext) = match file.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => (stem.to_owned(), ext.to_owned()),
            _ => (file.into_owned(), String::new()),
        };
        LogName { dir: durable::parent_of(active).to_owned(), stem, ext }
    }

    pub fn active(&self) -> PathBuf {
        self.dir.join(self.join_ext(&self.stem))
    }

    /// Uncompressed name of the segment whose first entry has `first_seq`.
    pub fn rotated(&self, first_seq: u64) -> PathBuf {
        self.dir.join(self.join_ext(&format!("{}-{first_seq:0width$}", self.stem, width = SEQ_DIGITS)))
    }

    fn join_ext(&self, base: &str) -> String {
        if self.ext.is_empty() {
            base.to_owned()
        } else {
            format!("{base}.{}", self.ext)
        }
    }

    /// First sequence of a rotated segment file name of this log, with its compression.
    fn parse_rotated(&self, file: &str) -> Option<(u64, Compression)> {
        let rest = file.strip_prefix(&self.stem)?.strip_prefix('-')?;
        let (digits, rest) = rest.split_at_checked(SEQ_DIGITS)?;
        let first = digits.bytes().all(|b| b.is_ascii_digit()).then(|| digits.parse().ok())??;
        let rest = if self.ext.is_empty() {
            rest
        } else {
            rest.strip_prefix('.')?.strip_prefix(self.ext.as_str())?
        };
        let compression = match rest {
            "" => Compression::None,
            ".zst" => Compression::Zstd,
            ".gz" => Compression::Gzip,
            _ => return None,
        };
        Some((first, compression))
    }

    /// Rotated segments by first sequence (a compressed copy wins over a leftover plain one), then the
    /// active segment if it exists.
    pub fn list(&self) -> io::Result<Vec<Segment>> {
        let mut rotated: Vec<Segment> = Vec::new();
        for dirent in fs::read_dir(&self.dir)? {
            let dirent = dirent?;
            let name = dirent.file_name();
            let Some((first, compression)) = name.to_str().and_then(|n| self.parse_rotated(n)) else {
                continue;
            };
            rotated.push(Segment { path: dirent.path(), first_seq: Some(first), compression });
        }
        rotated.sort_by_key(|s| (s.first_seq, s.compression == Compression::None));
        rotated.dedup_by_key(|s| s.first_seq);
        let active = self.active();
        if active.exists() {
            rotated.push(Segment { path: active, first_seq: None, compression: Compression::None });
        }
        Ok(rotated)
    }
}

/// One file of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub path: PathBuf,
    /// From the name; `None` for the active segment.
    pub first_seq: Option<u64>,
    pub compression: Compression,
}

/// A reader over `path`'s lines, decompressing by its content (see `Compression::of_content`);
/// `counter` sees the bytes read from disk.
pub fn open_reader(path: &Path, counter: impl Fn(u64) + Send + 'static) -> io::Result<Box<dyn Read + Send>> {
    let compression = Compression::of_content(path)?;
    let raw = Counting { inner: File::open(path)?, counter };
    Ok(match compression {
        Compression::None => Box::new(raw),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(raw)?),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(raw))),
    })
}

struct Counting<R, F> {
    inner: R,
    counter: F,
}

impl<R: Read, F: Fn(u64)> Read for Counting<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.counter)(n as u64);
        Ok(n)
    }
}

/// Compresses the plain rotated segment `plain` into `<plain>.zst|.gz` (written to a temporary name, synced,
/// renamed), then removes `plain`. A crash at any point leaves at least one complete copy.
pub fn compress(plain: &Path, compression: Compression) -> io::Result<PathBuf> {
    if compression == Compression::None {
        return Ok(plain.to_owned());
    }
    let mut target = plain.as_os_str().to_owned();
    target.push(compression.suffix());
    let target = PathBuf::from(target);
    let temp = durable::temp_path(&target);
    let out = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
    let mut input = File::open(plain)?;
    let file = match compression {
        Compression::Zstd => {
            let mut encoder = zstd::stream::write::Encoder::new(out, 3)?;
            io::copy(&mut input, &mut encoder)?;
            encoder.finish()?
        }
        Compression::Gzip | Compression::None => {
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            io::copy(&mut input, &mut encoder)?;
            encoder.finish()?
        }
    };
    file.sync_all()?;
    fs::rename(&temp, &target)?;
    durable::sync_parent(&target)?;
    fs::remove_file(plain)?;
    durable::sync_parent(plain)?;
    Ok(target)
}

/// Removes temporary files a crash left beside the log (interrupted compressions and head writes).
pub fn remove_leftovers(name: &LogName) -> io::Result<()> {
    for dirent in fs::read_dir(&name.dir)? {
        let path = dirent?.path();
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
        if file.starts_with(&name.stem) && file.ends_with(".tmp") {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_list_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let name = LogName::of_active(&dir.path().join("audit.jsonl"));
        assert_eq!(name.rotated(42).file_name().unwrap(), "audit-00000000000000000042.jsonl");
        for first in [100u64, 7, 42] {
            fs::write(name.rotated(first), format!("{first}\n")).unwrap();
        }
        compress(&name.rotated(42), Compression::Zstd).unwrap();
        compress(&name.rotated(100), Compression::Gzip).unwrap();
        fs::write(name.active(), "").unwrap();
        fs::write(dir.path().join("other-00000000000000000001.jsonl"), "").unwrap();
        let listed = name.list().unwrap();
        let firsts: Vec<_> = listed.iter().map(|s| s.first_seq).collect();
        assert_eq!(firsts, [Some(7), Some(42), Some(100), None]);
        assert_eq!(listed[1].compression, Compression::Zstd);
        // Recompressed with the other codec under its old name: read by content.
        let zst = name.rotated(42).with_extension("jsonl.zst");
        fs::remove_file(&zst).unwrap();
        fs::write(name.rotated(42), "42\n").unwrap();
        let gz = compress(&name.rotated(42), Compression::Gzip).unwrap();
        fs::rename(gz, &zst).unwrap();
        assert_eq!(Compression::of_content(&zst).unwrap(), Compression::Gzip);
        for (segment, expected) in listed.iter().zip(["7\n", "42\n", "100\n"]) {
            let mut text = String::new();
            open_reader(&segment.path, |_| {}).unwrap().read_to_string(&mut text).unwrap();
            assert_eq!(text, expected);
        }
    }
}
