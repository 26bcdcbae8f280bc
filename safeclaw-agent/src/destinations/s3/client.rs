//! A small S3 client over the blocking `ureq` agent, signed with SigV4: put (with checksum and object
//! lock), head, get and list, path-style for custom endpoints and virtual-hosted for AWS.
use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use time::OffsetDateTime;

use super::credentials::{default_endpoint, default_region, Credentials};
use super::sigv4::{authorization, sha256_hex, uri_encode, Request};
use crate::destinations::engine::SendError;

/// Where a bucket is, and how to reach it.
pub struct Client {
    agent: ureq::Agent,
    /// `scheme://host[:port]` without a trailing slash.
    origin: String,
    /// The Host header: the origin's authority (default ports dropped).
    host: String,
    /// Path-style (`/bucket/key`) unless the endpoint is AWS's own.
    path_style: bool,
    pub bucket: String,
    region: String,
}

/// What a stored object's headers say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectInfo {
    pub version_id: Option<String>,
    pub lock_mode: Option<String>,
    pub retain_until: Option<String>,
    /// Base64 SHA-256 the store computed (`x-amz-checksum-sha256`), when it keeps one.
    pub checksum_sha256: Option<String>,
    pub length: Option<u64>,
}

/// An object lock to set on a put: mode and retain-until (RFC 3339, UTC).
pub struct Lock<'a> {
    pub mode: &'a str,
    pub until: String,
}

/// `YYYY-MM-DDTHH:MM:SSZ` of `time` (UTC).
pub fn rfc3339(time: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        time.year(),
        time.month() as u8,
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    )
}

fn amz_date(time: OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        time.year(),
        time.month() as u8,
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    )
}

/// The text of `<tag>…</tag>` elements in an S3 XML answer, unescaped.
pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(
            after[..end]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&#13;", "\r")
                .replace("&amp;", "&"),
        );
        rest = &after[end + close.len()..];
    }
    out
}

/// An answer other than 2xx as the engine's error: transient ones retried, others refused.
fn status_error(status: u16, body: &str, what: &str) -> SendError {
    let code = xml_values(body, "Code").into_iter().next().unwrap_or_default();
    let reason = format!("{what}: HTTP {status} {code}").trim_end().to_owned();
    if status >= 500 || status == 408 || status == 429 {
        SendError::retry(reason)
    } else {
        SendError::Refused { reason }
    }
}

impl Client {
    /// `endpoint` and `region` as configured, else from the environment (and profile).
    pub fn new(bucket: &str, endpoint: Option<&str>, region: Option<&str>) -> Result<Self, String> {
        let region = region.map_or_else(default_region, str::to_owned);
        let configured = endpoint.map(str::to_owned).or_else(default_endpoint);
        let path_style = configured.is_some();
        let origin = configured
            .unwrap_or_else(|| format!("https://{bucket}.s3.{region}.amazonaws.com"))
            .trim_end_matches('/')
            .to_owned();
        let authority = origin
            .strip_prefix("https://")
            .map(|a| a.strip_suffix(":443").unwrap_or(a))
            .or_else(|| origin.strip_prefix("http://").map(|a| a.strip_suffix(":80").unwrap_or(a)))
            .ok_or_else(|| format!("S3 endpoint {origin:?} must start with http:// or https://"))?;
        if authority.is_empty() || authority.contains('/') {
            return Err(format!("S3 endpoint {origin:?} must be scheme://host[:port] without a path"));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(300)))
            .user_agent(concat!("safeclaw-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Client {
            agent,
            host: authority.to_owned(),
            origin,
            path_style,
            bucket: bucket.to_owned(),
            region,
        })
    }

    /// For status and logs: `s3://bucket at origin`.
    pub fn target(&self) -> String {
        format!("s3://{} at {}", self.bucket, self.origin)
    }

    fn path(&self, key: &str) -> String {
        let key = uri_encode(key, true);
        if self.path_style {
            format!("/{}/{key}", uri_encode(&self.bucket, false))
        } else {
            format!("/{key}")
        }
    }

    /// Sends one signed request; `body` with its SHA-256 (hex) for puts.
    fn request(
        &self,
        method: &str,
        key: &str,
        query: &[(String, String)],
        extra: &[(String, String)],
        body: Option<(&mut dyn Read, u64, &str)>,
    ) -> Result<ureq::http::Response<ureq::Body>, SendError> {
        let credentials = Credentials::load().map_err(|reason| SendError::Refused { reason })?;
        let path = self.path(key);
        let now = OffsetDateTime::from(SystemTime::now());
        let date = amz_date(now);
        let empty = sha256_hex(b"");
        let payload = body.as_ref().map_or(empty.as_str(), |(_, _, sha)| sha).to_owned();
        let mut headers = vec![
            ("host".to_string(), self.host.clone()),
            ("x-amz-content-sha256".to_string(), payload.clone()),
            ("x-amz-date".to_string(), date.clone()),
        ];
        if let Some(token) = &credentials.session_token {
            headers.push(("x-amz-security-token".into(), token.clone()));
        }
        headers.extend(extra.iter().cloned());
        let signed = Request { method, path: &path, query, headers: &headers, payload_sha256: &payload };
        let auth = authorization(&signed, &credentials, &self.region, &date);
        let query_text: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let url = if query.is_empty() {
            format!("{}{path}", self.origin)
        } else {
            format!("{}{path}?{}", self.origin, query_text.join("&"))
        };
        let mut builder =
            ureq::http::Request::builder().method(method).uri(&url).header("authorization", auth);
        for (name, value) in headers.iter().filter(|(n, _)| n != "host") {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let what = format!("{method} {key}");
        let result = match body {
            Some((reader, length, _)) => {
                let request = builder
                    .header("content-length", length.to_string())
                    .body(ureq::SendBody::from_reader(reader))
                    .map_err(|e| SendError::retry(format!("{what}: {e}")))?;
                self.agent.run(request)
            }
            None => {
                let request = builder.body(()).map_err(|e| SendError::retry(format!("{what}: {e}")))?;
                self.agent.run(request)
            }
        };
        let mut response = result.map_err(|e| SendError::retry(format!("{what}: {e}")))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            return Err(status_error(status, &body, &what));
        }
        Ok(response)
    }

    /// Puts `length` bytes from `body` whose SHA-256 is `sha256`, checked by the store
    /// (`x-amz-checksum-sha256`), with `lock` if given; what the store answered.
    pub fn put(
        &self,
        key: &str,
        body: &mut dyn Read,
        length: u64,
        sha256: &[u8; 32],
        lock: Option<&Lock<'_>>,
    ) -> Result<ObjectInfo, SendError> {
        let mut extra = vec![
            ("x-amz-checksum-sha256".to_string(), base64::engine::general_purpose::STANDARD.encode(sha256)),
            ("x-amz-sdk-checksum-algorithm".to_string(), "SHA256".to_string()),
        ];
        if let Some(lock) = lock {
            extra.push(("x-amz-object-lock-mode".into(), lock.mode.to_owned()));
            extra.push(("x-amz-object-lock-retain-until-date".into(), lock.until.clone()));
        }
        let hex = super::sigv4::hex(sha256);
        let response = self.request("PUT", key, &[], &extra, Some((body, length, &hex)))?;
        Ok(info(&response))
    }

    /// The object's (or version's) headers, with its checksum when the store keeps one.
    pub fn head(&self, key: &str, version: Option<&str>) -> Result<ObjectInfo, SendError> {
        let query: Vec<(String, String)> =
            version.map(|v| ("versionId".to_string(), uri_encode(v, false))).into_iter().collect();
        let extra = [("x-amz-checksum-mode".to_string(), "ENABLED".to_string())];
        let response = self.request("HEAD", key, &query, &extra, None)?;
        Ok(info(&response))
    }

    /// Streams the object's bytes into `out`; how many.
    pub fn get_to(&self, key: &str, version: Option<&str>, out: &mut dyn Write) -> Result<u64, SendError> {
        let query: Vec<(String, String)> =
            version.map(|v| ("versionId".to_string(), uri_encode(v, false))).into_iter().collect();
        let mut response = self.request("GET", key, &query, &[], None)?;
        let mut body = response.body_mut().with_config().limit(u64::MAX).reader();
        std::io::copy(&mut body, out).map_err(|e| SendError::retry(format!("GET {key}: {e}")))
    }

    /// Every key under `prefix`, in the store's order (ListObjectsV2, all pages).
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, SendError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("list-type".to_string(), "2".to_string()),
                ("prefix".to_string(), uri_encode(prefix, false)),
            ];
            if let Some(token) = &token {
                query.push(("continuation-token".into(), uri_encode(token, false)));
            }
            let mut response = self.request("GET", "", &query, &[], None)?;
            let xml = response
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_string()
                .map_err(|e| SendError::retry(format!("listing {prefix}: {e}")))?;
            keys.extend(xml_values(&xml, "Key"));
            token = xml_values(&xml, "NextContinuationToken").into_iter().next();
            if xml_values(&xml, "IsTruncated").first().is_none_or(|t| t != "true") || token.is_none() {
                return Ok(keys);
            }
        }
    }
}

fn info(response: &ureq::http::Response<ureq::Body>) -> ObjectInfo {
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    ObjectInfo {
        version_id: header("x-amz-version-id"),
        lock_mode: header("x-amz-object-lock-mode"),
        retain_until: header("x-amz-object-lock-retain-until-date"),
        checksum_sha256: header("x-amz-checksum-sha256"),
        length: header("content-length").and_then(|l| l.parse().ok()),
    }
}
