//! `audit verify --against s3://bucket/prefix`: the bucket's copy of a log (its segments verified as a
//! chain, its newest signed head) compared with the host's, naming the first difference — which shows a
//! host copy that was edited, cut or rolled back together with its head.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};

use super::client::Client;
use crate::audit::reader::ChainReader;
use crate::audit::segment::{open_reader, LogName};
use crate::audit::signing::{HeadFile, PublicKey};
use crate::audit::verify::{verify, VerifyOptions};

/// `s3://BUCKET/PREFIX` split.
pub fn parse_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest =
        url.strip_prefix("s3://").with_context(|| format!("{url:?} is not an s3://BUCKET/PREFIX URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        bail!("{url:?} names no bucket");
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

/// What the comparison found.
#[derive(Debug)]
pub struct Comparison {
    pub segments: usize,
    pub entries_compared: u64,
    /// The newest head in the bucket (its size).
    pub bucket_head: Option<u64>,
    /// The first difference, with the entry it is at when one can be named.
    pub difference: Option<(Option<u64>, String)>,
}

/// First sequence of a segment object's file name (`<stem>-<20 digits>.<ext>[.zst|.gz]`).
fn segment_first(name: &str) -> Option<u64> {
    let (_, tail) = name.rsplit_once('-')?;
    let digits = tail.get(..20)?;
    (digits.bytes().all(|b| b.is_ascii_digit()) && tail[20..].starts_with('.'))
        .then(|| digits.parse().ok())?
}

fn head_size(name: &str) -> Option<u64> {
    name.strip_prefix("head-")?.strip_suffix(".json")?.parse().ok()
}

fn lines(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let reader = open_reader(path, |_| {}).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for line in BufReader::new(reader).split(b'\n') {
        out.push(line.with_context(|| format!("reading {}", path.display()))?);
    }
    Ok(out)
}

/// Compares the host's log at `active` and head file at `head_path` with the bucket's copy under
/// `prefix`, downloading it into `scratch`. `key` checks the bucket's head signature.
pub fn compare(
    client: &Client,
    prefix: &str,
    active: &Path,
    head_path: &Path,
    key: Option<&PublicKey>,
    scratch: &Path,
) -> anyhow::Result<Comparison> {
    let host_head = HeadFile::read(head_path)
        .with_context(|| format!("reading {}", head_path.display()))?
        .with_context(|| format!("no head file at {}", head_path.display()))?;
    let log_id = host_head.log_id.clone();
    let keys =
        client.list(prefix).map_err(|e| anyhow::anyhow!("listing s3://{}/{prefix}: {e}", client.bucket))?;
    let mut segments: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let mut heads: BTreeMap<u64, String> = BTreeMap::new();
    for object in keys {
        let mut parts = object.rsplit('/');
        let (Some(name), Some(dir)) = (parts.next(), parts.next()) else { continue };
        if dir != log_id {
            continue;
        }
        if let Some(size) = head_size(name) {
            heads.insert(size, object.clone());
        } else if let Some(first) = segment_first(name) {
            segments.entry(first).or_insert((object.clone(), name.to_owned()));
        }
    }
    if segments.is_empty() && heads.is_empty() {
        bail!("s3://{}/{prefix} holds nothing of log {log_id}", client.bucket);
    }
    let mut comparison =
        Comparison { segments: segments.len(), entries_compared: 0, bucket_head: None, difference: None };
    // The bucket's segments, downloaded and verified as one chain.
    let mut files: Vec<PathBuf> = Vec::new();
    for (object, name) in segments.values() {
        let path = scratch.join(name);
        let mut file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        client.get_to(object, None, &mut file).map_err(|e| anyhow::anyhow!("{e}"))?;
        files.push(path);
    }
    if let Some(first) = segments.keys().next() {
        let opts = VerifyOptions {
            trusted_key: key.cloned(),
            head_path: None,
            from: (*first > 0).then_some(*first),
            accept: Vec::new(),
        };
        let report = verify(&files, &opts, Arc::new(|_| {})).context("verifying the bucket's copy")?;
        if let Some(failure) = &report.failure {
            bail!(
                "the bucket's own copy fails verification at entry {:?}: {}",
                failure.sequence,
                failure.damage
            );
        }
    }
    // Entry by entry against the host's segments of the same first sequence.
    let host: BTreeMap<u64, PathBuf> = LogName::of_active(active)
        .list()
        .with_context(|| format!("listing {}", active.display()))?
        .into_iter()
        .filter_map(|s| s.first_seq.map(|f| (f, s.path)))
        .collect();
    for ((first, (object, _)), downloaded) in segments.iter().zip(&files) {
        let Some(host_path) = host.get(first) else {
            if comparison.difference.is_none() && host.keys().next().is_some_and(|h| h < first) {
                comparison.difference = Some((
                    Some(*first),
                    format!("the host has no segment starting at entry {first}; the bucket has {object}"),
                ));
            }
            continue;
        };
        let (ours, theirs) = (lines(host_path)?, lines(downloaded)?);
        for (n, bucket_line) in theirs.iter().enumerate() {
            let sequence = first + n as u64;
            match ours.get(n) {
                Some(host_line) if host_line == bucket_line => comparison.entries_compared += 1,
                Some(_) => {
                    comparison.difference = Some((
                        Some(sequence),
                        format!(
                            "entry {sequence} differs: {} line {} is not the bucket's {object} line {}",
                            host_path.display(),
                            n + 1,
                            n + 1
                        ),
                    ));
                    return Ok(comparison);
                }
                None => {
                    comparison.difference = Some((
                        Some(sequence),
                        format!(
                            "entry {sequence} is missing on the host: {} ends before the bucket's {object}",
                            host_path.display()
                        ),
                    ));
                    return Ok(comparison);
                }
            }
        }
        if ours.len() > theirs.len() {
            let sequence = first + theirs.len() as u64;
            comparison.difference = Some((
                Some(sequence),
                format!(
                    "entry {sequence}: {} has entries the bucket's sealed {object} does not",
                    host_path.display()
                ),
            ));
            return Ok(comparison);
        }
    }
    if comparison.difference.is_some() {
        return Ok(comparison);
    }
    // The newest head in the bucket against the host's head and log.
    if let Some((size, object)) = heads.iter().next_back() {
        comparison.bucket_head = Some(*size);
        let mut bytes = Vec::new();
        client.get_to(object, None, &mut bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        let bucket_head: HeadFile =
            serde_json::from_slice(&bytes).with_context(|| format!("{object}: not a head file"))?;
        if let Some(key) = key {
            let signed = bucket_head.statement().is_some_and(|s| key.verifies(&s, &bucket_head.signature));
            if !signed {
                bail!("{object}: its signature is not by the trusted key");
            }
        }
        if host_head.size < bucket_head.size {
            comparison.difference = Some((
                Some(host_head.size),
                format!(
                    "the host's head covers {} entries but the bucket's {object} (signed {}) covers {}: the \
                     host's log was rolled back",
                    host_head.size, bucket_head.time, bucket_head.size
                ),
            ));
            return Ok(comparison);
        }
        let at = bucket_head.size.saturating_sub(1);
        let hash = ChainReader::new(active)
            .read(at, bucket_head.size, 1)
            .map(|entries| entries.first().map(|e| e.hash.to_string()));
        match hash {
            Ok(Some(hash)) if hash == bucket_head.head => {}
            Ok(_) => {
                comparison.difference = Some((
                    Some(at),
                    format!("entry {at} on the host is not the one the bucket's {object} signs"),
                ))
            }
            Err(e) => {
                comparison.difference =
                    Some((Some(at), format!("entry {at}, which the bucket's {object} signs: {e}")))
            }
        }
    }
    Ok(comparison)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_recognised() {
        assert_eq!(segment_first("audit-00000000000000000042.jsonl.zst"), Some(42));
        assert_eq!(segment_first("audit.jsonl"), None);
        assert_eq!(head_size("head-00000000000000001000.json"), Some(1000));
        assert_eq!(parse_url("s3://b/p/q").unwrap(), ("b".into(), "p/q".into()));
        assert!(parse_url("http://b").is_err());
    }
}
