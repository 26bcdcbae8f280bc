//! The webhook transport: HTTP(S) POST of JSON batches, signed with HMAC-SHA256 over the body, with an
//! idempotency key per batch; transient failures are retried, refusals make the destination stuck.
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::config::WebhookConfig;
use super::engine::{SendError, Sent, Transport};
use crate::audit::chain::hex_string;
use crate::audit::reader::ChainEntry;

/// `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-SafeClaw-Signature";
/// `<first sequence>-<last sequence>` of the batch: the same for every retry of it.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

#[derive(Debug, thiserror::Error)]
pub enum WebhookSetupError {
    #[error("{path}: {reason}")]
    Ca { path: String, reason: String },
}

pub struct WebhookTransport {
    config: WebhookConfig,
    agent: ureq::Agent,
    host: String,
}

impl WebhookTransport {
    pub fn new(config: WebhookConfig) -> Result<Self, WebhookSetupError> {
        let mut builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(config.timeout()))
            .user_agent(concat!("safeclaw-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_file {
            let error = |reason: String| WebhookSetupError::Ca { path: ca.0.display().to_string(), reason };
            let pem = std::fs::read(&ca.0).map_err(|e| error(e.to_string()))?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(error("no certificate in the file".into()));
            }
            let tls = ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                .build();
            builder = builder.tls_config(tls);
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned();
        Ok(WebhookTransport { agent: builder.build().into(), config, host })
    }

    /// The request body: the entries byte for byte, one per line, inside a JSON object.
    pub fn body(&self, batch: &[ChainEntry]) -> Vec<u8> {
        let (first, last) = (batch.first().map_or(0, |e| e.sequence), batch.last().map_or(0, |e| e.sequence));
        let mut body = Vec::with_capacity(batch.iter().map(|e| e.line.len() + 2).sum::<usize>() + 128);
        body.extend_from_slice(format!("{{\"count\":{},\"entries\":[\n", batch.len()).as_bytes());
        for (i, entry) in batch.iter().enumerate() {
            if i > 0 {
                body.extend_from_slice(b",\n");
            }
            body.extend_from_slice(&entry.line);
        }
        let host = serde_json::Value::String(self.host.clone());
        body.extend_from_slice(format!("\n],\"first\":{first},\"host\":{host},\"last\":{last}}}").as_bytes());
        body
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    format!("sha256={}", hex_string(&mac.finalize().into_bytes()))
}

/// A URL shown without what may be secret: scheme and host only (tokens live in paths and queries).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{host}/…")
}

/// Seconds of a Retry-After header (an HTTP date counts as the default backoff).
fn retry_after(response: &ureq::http::Response<ureq::Body>) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl Transport for WebhookTransport {
    fn target(&self) -> String {
        format!("webhook {}", redact_url(&self.config.url.0))
    }

    fn batch_size(&self) -> usize {
        self.config.batch_size()
    }

    fn flush_interval(&self) -> Duration {
        self.config.flush_interval()
    }

    fn send(&mut self, batch: &[ChainEntry]) -> Result<Sent, SendError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else { return Ok(Sent::Acknowledged) };
        let body = self.body(batch);
        let mut request = self
            .agent
            .post(&self.config.url.0)
            .header("Content-Type", "application/json")
            .header(IDEMPOTENCY_HEADER, &format!("{}-{}", first.sequence, last.sequence));
        if let Some(secret) = &self.config.secret {
            request = request.header(SIGNATURE_HEADER, &signature(secret.0.as_bytes(), &body));
        }
        let target = redact_url(&self.config.url.0);
        let response = request.send(&body[..]).map_err(|e| {
            // ureq's messages may quote the URL: never let it out.
            let message = e.to_string().replace(&self.config.url.0, &target);
            SendError::retry(format!("POST to {target}: {message}"))
        })?;
        let status = response.status().as_u16();
        match status {
            200..=299 => Ok(Sent::Acknowledged),
            408 | 429 | 500..=599 => Err(SendError::Retry {
                reason: format!("POST to {target}: HTTP {status}"),
                after: retry_after(&response),
            }),
            _ => Err(SendError::Refused {
                reason: format!(
                    "POST to {target}: HTTP {status} for entries {}..={}: the receiver refuses this batch",
                    first.sequence, last.sequence
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn urls_are_shown_without_paths_queries_or_credentials() {
        assert_eq!(
            redact_url("https://user:pw@hooks.example:8443/t/SECRET?k=v"),
            "https://hooks.example:8443/…"
        );
        assert_eq!(redact_url("http://h"), "http://h/…");
    }
}
