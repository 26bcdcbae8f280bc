//! S3 credentials from the standard places: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
//! `AWS_SESSION_TOKEN`, else the profile (`AWS_PROFILE`, default `default`) of the shared credentials and
//! config files (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`, default `~/.aws/credentials`, `~/.aws/config`).
use std::fmt;
use std::path::PathBuf;

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.access_key_id)
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn profile_name() -> String {
    env("AWS_PROFILE").unwrap_or_else(|| "default".into())
}

fn home_file(var: &str, rel: &str) -> Option<PathBuf> {
    env(var).map(PathBuf::from).or_else(|| env("HOME").map(|home| PathBuf::from(home).join(rel)))
}

/// `key = value` pairs of `[section]` in an INI file, if it is there.
fn ini_section(path: Option<PathBuf>, section: &str) -> Vec<(String, String)> {
    let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else { return Vec::new() };
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
        } else if inside {
            if let Some((key, value)) = line.split_once('=') {
                out.push((key.trim().to_owned(), value.trim().to_owned()));
            }
        }
    }
    out
}

/// The profile's settings: the credentials file's section, then the config file's `[profile NAME]`
/// (`[default]` for the default profile).
fn profile() -> Vec<(String, String)> {
    let name = profile_name();
    let mut pairs = ini_section(home_file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"), &name);
    let config_section = if name == "default" { name.clone() } else { format!("profile {name}") };
    pairs.extend(ini_section(home_file("AWS_CONFIG_FILE", ".aws/config"), &config_section));
    pairs
}

fn lookup(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).filter(|v| !v.is_empty())
}

impl Credentials {
    /// The environment's, else the profile's; the error says where it looked (never a secret).
    pub fn load() -> Result<Self, String> {
        if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            return Ok(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: env("AWS_SESSION_TOKEN"),
            });
        }
        let pairs = profile();
        match (lookup(&pairs, "aws_access_key_id"), lookup(&pairs, "aws_secret_access_key")) {
            (Some(id), Some(secret)) => Ok(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: lookup(&pairs, "aws_session_token"),
            }),
            _ => Err(format!(
                "no S3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set and profile {:?} \
                 has no aws_access_key_id and aws_secret_access_key",
                profile_name()
            )),
        }
    }
}

/// The region: `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, else us-east-1.
pub fn default_region() -> String {
    env("AWS_REGION")
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| lookup(&profile(), "region"))
        .unwrap_or_else(|| "us-east-1".into())
}

/// The endpoint: `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, if set.
pub fn default_endpoint() -> Option<String> {
    env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL"))
}
