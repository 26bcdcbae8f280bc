//! The evidence pack (`.zip`): the log's segments and signed head as verified, the public key, the
//! policies in force by hash, the report as PDF and JSON, the full listings, the verifier's transcript,
//! and `manifest.json` (sha256 of every file) signed with the log's key. `verify` checks a pack without
//! the host: the signature, every file's hash, that the archive holds nothing else and is byte for byte
//! the archive those files make, and the chain again.
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zip::write::SimpleFileOptions;

use super::aggregate::{ReportData, Request, Spill, Verdict};
use crate::audit::signing::{AuditKey, PublicKey};
use crate::audit::verify::VerifyOptions;

/// The context string manifest signatures are made under.
pub const MANIFEST_CONTEXT: &str = "safeclaw-evidence-manifest/v1";
const MANIFEST: &str = "manifest.json";
const SIGNATURE: &str = "manifest.sig";
const PUBKEY: &str = "pubkey.txt";
const HEAD: &str = "audit.head";

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub log_id: Option<String>,
    pub public_key: String,
    pub framework: String,
    pub period: String,
    pub verdict: Verdict,
    /// Policies in force whose text could not be included (source gone or changed since), by hash.
    pub policies_missing: Vec<String>,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

impl<'de> Deserialize<'de> for Verdict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "PASSED" => Ok(Verdict::Passed),
            "FAILED" => Ok(Verdict::Failed),
            other => Err(serde::de::Error::custom(format!("unknown verdict {other:?}"))),
        }
    }
}

/// Files staged for the archive, removed when dropped.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn new(near: &Path) -> anyhow::Result<Staging> {
        let name = near.file_name().map_or_else(|| "pack".into(), |n| n.to_string_lossy().into_owned());
        let dir = near.with_file_name(format!(".{name}.staging-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Staging { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let size = io::copy(&mut file, &mut hasher)?;
    Ok((size, crate::audit::chain::hex_string(&hasher.finalize())))
}

/// Copies a segment as it is now; the active one up to its last complete line (a writer may be adding).
fn snapshot(from: &Path, to: &Path) -> io::Result<()> {
    let length = fs::metadata(from)?.len();
    let mut reader = File::open(from)?.take(length);
    let mut out = File::create(to)?;
    io::copy(&mut reader, &mut out)?;
    if crate::audit::segment::Compression::of_content(from)? == crate::audit::segment::Compression::None {
        let data = fs::read(to)?;
        let keep = memchr::memrchr(b'\n', &data).map_or(0, |i| i + 1);
        out.set_len(keep as u64)?;
    }
    out.sync_all()
}

fn file_options(size: u64) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644)
        .large_file(size >= u64::from(u32::MAX))
}

/// Adds one file to the archive: its name, contents and size.
type AddFile<'a> = dyn FnMut(&str, &mut dyn Read, u64) -> io::Result<()> + 'a;

/// Writes the archive: manifest and signature first, then the files in manifest order, all stored
/// uncompressed with fixed metadata, so that the bytes follow from the contents alone.
fn write_archive<W: Write>(
    out: W,
    entries: &mut dyn FnMut(&mut AddFile<'_>) -> io::Result<()>,
) -> io::Result<W> {
    let mut zip = zip::ZipWriter::new_stream(out);
    entries(&mut |name, data, size| {
        zip.start_file(name, file_options(size)).map_err(io::Error::other)?;
        io::copy(data, &mut zip)?;
        Ok(())
    })?;
    let stream = zip.finish().map_err(io::Error::other)?;
    Ok(stream.into_inner())
}

/// Builds the pack for `request` from the log `files` at `output`. Returns the report (its verdict
/// decides the exit status).
pub fn write(
    files: &[PathBuf],
    head_path: Option<&Path>,
    key: &AuditKey,
    request: Request,
    output: &Path,
) -> anyhow::Result<ReportData> {
    let staging = Staging::new(output)?;
    let mut names = BTreeMap::new();
    // The head first: the segments copied after it hold at least what it signs.
    let staged_head = match head_path {
        Some(path) if path.exists() => {
            fs::copy(path, staging.path(HEAD)).with_context(|| format!("copying {}", path.display()))?;
            names.insert(HEAD.to_string(), staging.path(HEAD));
            Some(staging.path(HEAD))
        }
        _ => None,
    };
    fs::create_dir_all(staging.path("segments"))?;
    let mut staged = Vec::new();
    for file in files {
        let name = file.file_name().context("a log file without a name")?.to_string_lossy().into_owned();
        let to = staging.path(&format!("segments/{name}"));
        snapshot(file, &to).with_context(|| format!("copying {}", file.display()))?;
        names.insert(format!("segments/{name}"), to.clone());
        staged.push(to);
    }
    let opts = VerifyOptions {
        trusted_key: Some(key.public()),
        head_path: staged_head.clone(),
        ..Default::default()
    };
    let data = {
        let mut denials = BufWriter::new(File::create(staging.path("denials.jsonl"))?);
        let mut access = BufWriter::new(File::create(staging.path("access.jsonl"))?);
        let mut phi = BufWriter::new(File::create(staging.path("phi-access.jsonl"))?);
        let spill = Spill {
            denials: Some(&mut denials),
            tagged_access: Some(&mut access),
            phi_access: request.include_phi_access.then_some(&mut phi as &mut dyn Write),
        };
        let data = super::cli::compute(&staged, &opts, request.clone(), spill)?;
        for mut w in [denials, access, phi] {
            w.flush()?;
        }
        data
    };
    for listing in ["denials.jsonl", "access.jsonl"] {
        names.insert(listing.to_string(), staging.path(listing));
    }
    if request.include_phi_access {
        names.insert("phi-access.jsonl".into(), staging.path("phi-access.jsonl"));
    }
    let document = super::document::Document::of(&data);
    fs::write(staging.path("report.pdf"), super::pdf::render(&document)?)?;
    fs::write(staging.path("report.json"), serde_json::to_vec_pretty(&data)?)?;
    fs::write(staging.path("verify.txt"), transcript(&data))?;
    fs::write(staging.path(PUBKEY), format!("{}\n", key.public().to_text()))?;
    fs::write(staging.path("README.txt"), readme())?;
    for name in ["report.pdf", "report.json", "verify.txt", PUBKEY, "README.txt"] {
        names.insert(name.to_string(), staging.path(name));
    }
    let mut policies_missing = Vec::new();
    for policy in &data.scope.policies {
        match policy_texts(policy.source.as_deref(), &policy.hash) {
            Some(paths) => {
                let hex = policy.hash.trim_start_matches("sha256:").to_string();
                for (i, path) in paths.iter().enumerate() {
                    let base = path
                        .file_name()
                        .map_or_else(|| "policy".into(), |n| n.to_string_lossy().into_owned());
                    let name = format!("policies/{hex}/{i}-{base}");
                    let to = staging.path(&name);
                    fs::create_dir_all(to.parent().unwrap_or(&staging.dir))?;
                    fs::copy(path, &to).with_context(|| format!("copying {}", path.display()))?;
                    names.insert(name, to);
                }
            }
            None => policies_missing.push(policy.hash.clone()),
        }
    }
    let mut manifest_files = Vec::new();
    for (name, path) in &names {
        let (size, sha256) = sha256_file(path).with_context(|| format!("hashing {}", path.display()))?;
        manifest_files.push(ManifestFile { path: name.clone(), size, sha256 });
    }
    let manifest = Manifest {
        format: "safeclaw-evidence/1".into(),
        log_id: data.scope.log_id.clone(),
        public_key: key.public().to_text(),
        framework: data.framework.framework.clone(),
        period: data.scope.period.as_ref().map_or(String::new(), |p| p.label.clone()),
        verdict: data.verification.verdict,
        policies_missing,
        files: manifest_files,
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
    let signature = format!("{}\n", key.sign_document(MANIFEST_CONTEXT, &manifest_bytes));
    let partial = output.with_extension("zip.partial");
    let out =
        BufWriter::new(File::create(&partial).with_context(|| format!("creating {}", partial.display()))?);
    let out = write_archive(out, &mut |add| {
        add(MANIFEST, &mut manifest_bytes.as_slice(), manifest_bytes.len() as u64)?;
        add(SIGNATURE, &mut signature.as_bytes(), signature.len() as u64)?;
        for file in &manifest.files {
            let path = &names[&file.path];
            add(&file.path, &mut File::open(path)?, file.size)?;
        }
        Ok(())
    })
    .with_context(|| format!("writing {}", partial.display()))?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    fs::rename(&partial, output).with_context(|| format!("renaming to {}", output.display()))?;
    Ok(data)
}

/// The files of a policy in force, if its source still loads to the same hash.
fn policy_texts(source: Option<&str>, hash: &str) -> Option<Vec<PathBuf>> {
    // The daemon records `PATH` or `PATH (note)`.
    let path = source?.split(" (").next()?;
    let policy = crate::policy::load_file(Path::new(path)).ok()?;
    (policy.hash.to_string() == hash)
        .then(|| policy.files.iter().map(|f| PathBuf::from(f.as_ref())).collect())
}

fn transcript(data: &ReportData) -> String {
    let v = &data.verification;
    let mut out = String::new();
    match &v.failure {
        None => out.push_str(&format!(
            "OK: {} entries (sequence {}..={}) in {} files; {} checkpoints checked against {}; signed through entry {}\n",
            v.entries_checked,
            v.first_sequence.map_or("-".into(), |s| s.to_string()),
            v.last_sequence.map_or("-".into(), |s| s.to_string()),
            v.files,
            v.checkpoints,
            v.key,
            v.signed_through.map_or("-".into(), |s| s.to_string()),
        )),
        Some(failure) => out.push_str(&format!("{failure}\n{} entries checked before it\n", v.entries_checked)),
    }
    if let Some(head) = &v.signed_head {
        out.push_str(&format!("signed head: {} entries, {} at {}\n", head.size, head.head, head.time));
    }
    for event in &v.events.shown {
        out.push_str(&format!(
            "entry {} {} {}: {}\n",
            event.sequence, event.timestamp, event.kind, event.detail
        ));
    }
    out
}

fn readme() -> String {
    format!(
        "SafeClaw evidence pack\n\
         ======================\n\n\
         manifest.json   sha256 and size of every other file in this archive\n\
         manifest.sig    ed25519 signature of the bytes \"{MANIFEST_CONTEXT}\\n\" + manifest.json, by the log's key\n\
         pubkey.txt      the log's public key (compare it with the one you hold: `safeclaw-agent audit pubkey`)\n\
         segments/       the audit log's segments as verified; audit.head: its signed head\n\
         policies/       the policy files in force, by policy hash\n\
         report.pdf, report.json   the report; denials.jsonl, access.jsonl: every listed entry, verbatim\n\
         verify.txt      the verifier's transcript\n\n\
         Check it with SafeClaw:  safeclaw-agent audit report verify PACK.zip [--pubkey ed25519:...]\n\n\
         Check it offline without SafeClaw:\n\
         1. unzip the archive; for every file in manifest.json compare `sha256sum FILE` with its sha256,\n\
            and check that no other file is present;\n\
         2. verify manifest.sig over the bytes \"{MANIFEST_CONTEXT}\" + newline + manifest.json with the\n\
            public key (Python: cryptography's Ed25519PublicKey.verify);\n\
         3. verify the chain with the Python verifier in the project's docs/audit-format.md:\n\
            cat segments/* (zstdcat / zcat compressed ones, in sequence order) | python3 verify.py \\\n\
                $(cat pubkey.txt) audit.head\n"
    )
}

/// A write sink that compares what is written with a reader and remembers the first differing offset.
struct Compare<R: Read> {
    expected: R,
    offset: u64,
    mismatch: Option<u64>,
    buffer: Vec<u8>,
}

impl<R: Read> Write for Compare<R> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.mismatch.is_none() {
            self.buffer.resize(data.len(), 0);
            let mut got = 0;
            while got < data.len() {
                let n = self.expected.read(&mut self.buffer[got..])?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            let same = data[..got].iter().zip(&self.buffer[..got]).position(|(a, b)| a != b);
            match same {
                Some(i) => self.mismatch = Some(self.offset + i as u64),
                None if got < data.len() => self.mismatch = Some(self.offset + got as u64),
                None => {}
            }
        }
        self.offset += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The outcome of checking a pack.
#[derive(Debug)]
pub struct Checked {
    pub files: usize,
    pub key_trusted: bool,
    pub verdict: Verdict,
    pub chain: String,
}

/// Checks the pack at `path` (see the module doc). Fails naming the first file found changed.
pub fn verify(path: &Path, trusted: Option<PublicKey>) -> anyhow::Result<Checked> {
    let open = || File::open(path).with_context(|| format!("opening {}", path.display()));
    let mut archive = zip::ZipArchive::new(io::BufReader::new(open()?)).with_context(|| {
        format!("{}: not a readable zip archive (its directory is damaged)", path.display())
    })?;
    let mut small = |name: &str| -> anyhow::Result<Vec<u8>> {
        let mut entry = archive.by_name(name).with_context(|| format!("{name}: missing from the pack"))?;
        let mut data = Vec::new();
        entry.by_ref().take(1 << 24).read_to_end(&mut data).with_context(|| format!("{name}: unreadable"))?;
        Ok(data)
    };
    let manifest_bytes = small(MANIFEST)?;
    let signature = String::from_utf8(small(SIGNATURE)?).context("manifest.sig: not text")?;
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).context("manifest.json: not a pack manifest")?;
    let pack_key = PublicKey::parse(&manifest.public_key).context("manifest.json: bad publicKey")?;
    if trusted.is_some_and(|t| t != pack_key) {
        bail!("manifest.json: signed by {}, not by the trusted key", manifest.public_key);
    }
    if !pack_key.verifies_document(MANIFEST_CONTEXT, &manifest_bytes, &signature) {
        bail!("manifest.json: its signature (manifest.sig) does not verify: the manifest or the signature was changed");
    }
    // Every file: present, hashed as listed; nothing else in the archive; and the archive is exactly the
    // one these contents make (so no header byte can change unnoticed either).
    let listed: BTreeMap<&str, &ManifestFile> = manifest.files.iter().map(|f| (f.path.as_str(), f)).collect();
    for i in 0..archive.len() {
        let entry =
            archive.by_index_raw(i).with_context(|| format!("{}: entry {i} unreadable", path.display()))?;
        let name = entry.name().map(|n| n.into_owned()).unwrap_or_else(|_| format!("entry {i}"));
        if name != MANIFEST && name != SIGNATURE && !listed.contains_key(name.as_str()) {
            bail!("{name}: in the pack but not in manifest.json");
        }
    }
    let mut spans = Vec::new();
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i)?;
        let name = entry.name().map(|n| n.into_owned()).unwrap_or_default();
        spans.push((
            entry.header_start(),
            entry.data_start().unwrap_or(entry.header_start()) + entry.compressed_size(),
            name,
        ));
    }
    let extract = std::env::temp_dir().join(format!("safeclaw-pack-{}", std::process::id()));
    let _cleanup = Staging { dir: extract.clone() };
    fs::create_dir_all(extract.join("segments"))?;
    let mut sink =
        Compare { expected: io::BufReader::new(open()?), offset: 0, mismatch: None, buffer: Vec::new() };
    let mut failure: Option<anyhow::Error> = None;
    let rebuilt = write_archive(&mut sink, &mut |add| {
        let mut copy = |name: &str, size: u64, expect: Option<&str>| -> io::Result<()> {
            let mut entry = match archive.by_name(name) {
                Ok(entry) => entry,
                Err(e) => {
                    failure.get_or_insert_with(|| anyhow::anyhow!("{name}: missing from the pack ({e})"));
                    return Err(io::Error::other("missing"));
                }
            };
            let keep = name.starts_with("segments/") || name == HEAD;
            let mut kept = if keep { Some(File::create(extract.join(name))?) } else { None };
            let mut hasher = Sha256::new();
            let mut tee = Tee { inner: &mut entry, hasher: &mut hasher, copy: kept.as_mut() };
            let result = add(name, &mut tee, size);
            if let Err(e) = result {
                failure
                    .get_or_insert_with(|| anyhow::anyhow!("{name}: unreadable ({e}): the file was changed"));
                return Err(e);
            }
            if let Some(expect) = expect {
                if crate::audit::chain::hex_string(&hasher.finalize()) != expect {
                    failure.get_or_insert_with(|| {
                        anyhow::anyhow!("{name}: its sha256 differs from manifest.json: the file was changed")
                    });
                    return Err(io::Error::other("hash"));
                }
            }
            Ok(())
        };
        copy(MANIFEST, manifest_bytes.len() as u64, None)?;
        copy(SIGNATURE, signature.len() as u64, None)?;
        for file in &manifest.files {
            copy(&file.path, file.size, Some(&file.sha256))?;
        }
        Ok(())
    });
    if let Some(failure) = failure {
        return Err(failure);
    }
    rebuilt.with_context(|| format!("reading {}", path.display()))?;
    let file_length = fs::metadata(path)?.len();
    let mismatch = sink.mismatch.or((sink.offset != file_length).then_some(sink.offset.min(file_length)));
    if let Some(offset) = mismatch {
        let place = spans.iter().find(|(start, end, _)| (*start..*end).contains(&offset)).map_or(
            "the archive's directory (names, sizes and offsets of its files)".to_string(),
            |(_, _, n)| format!("{n} (its zip header)"),
        );
        bail!("{place}: byte {offset} of the archive differs from the archive its contents make: the pack was changed");
    }
    // The chain again, from the packed segments alone.
    let segments: Vec<PathBuf> = manifest
        .files
        .iter()
        .filter(|f| f.path.starts_with("segments/"))
        .map(|f| extract.join(&f.path))
        .collect();
    let head = extract.join(HEAD);
    let opts = VerifyOptions {
        trusted_key: Some(pack_key),
        head_path: head.exists().then_some(head),
        ..Default::default()
    };
    let report = crate::audit::verify::verify(&segments, &opts, std::sync::Arc::new(|_| {}))?;
    let chain = match &report.failure {
        None => format!(
            "chain OK: {} entries, {} checkpoints, signed through entry {}",
            report.entries,
            report.checkpoints,
            report.signed_through.map_or("-".into(), |s| s.to_string())
        ),
        Some(f) => format!(
            "chain FAILED at entry {}: {}",
            f.sequence.map_or("-".into(), |s| s.to_string()),
            f.damage
        ),
    };
    let verdict = if report.ok() { Verdict::Passed } else { Verdict::Failed };
    if verdict != manifest.verdict {
        bail!("segments/: the chain now verifies as {verdict:?}, the manifest says {:?}", manifest.verdict);
    }
    Ok(Checked { files: manifest.files.len(), key_trusted: trusted.is_some(), verdict, chain })
}

/// Reads from `inner`, hashing what it reads and copying it to `copy`.
struct Tee<'a, R: Read> {
    inner: &'a mut R,
    hasher: &'a mut Sha256,
    copy: Option<&'a mut File>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if let Some(copy) = self.copy.as_mut() {
            copy.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}
