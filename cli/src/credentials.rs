//! The CLI's tokens, so a user never copies one by hand: a JSON object mapping
//! a controller endpoint to the token to use there (and the cluster CA its
//! TLS certificate must chain to), at `$EPHEMERA_CREDENTIALS` or
//! `~/.config/ephemera/credentials.json` (0600). `ephemera dev` adds its
//! admin token and CA for its endpoint when it starts and removes them when
//! it stops.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;

/// Environment variable naming the credentials file.
pub const CREDENTIALS_ENV: &str = "EPHEMERA_CREDENTIALS";

/// Where the credentials file lives.
pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(CREDENTIALS_ENV) {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".config/ephemera/credentials.json"))
}

/// What is saved for one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    /// The bearer token.
    pub token: String,
    /// The cluster CA certificate file, for an `https://` endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// An entry as written by this version (an object) or an older one (the token).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Entry {
    Saved(Saved),
    Token(String),
}

fn load(path: &std::path::Path) -> BTreeMap<String, Saved> {
    let entries: BTreeMap<String, Entry> = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    entries
        .into_iter()
        .map(|(endpoint, e)| {
            let saved = match e {
                Entry::Saved(s) => s,
                Entry::Token(token) => Saved { token, ca: None },
            };
            (endpoint, saved)
        })
        .collect()
}

fn save(path: &std::path::Path, map: &BTreeMap<String, Saved>) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(map)?.as_bytes())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// What is stored for `endpoint`.
pub fn lookup(endpoint: &str) -> Option<Saved> {
    load(&path()?).get(endpoint.trim_end_matches('/')).cloned()
}

/// Stores `saved` for `endpoint`; returns the file written.
pub fn store(endpoint: &str, saved: Saved) -> anyhow::Result<PathBuf> {
    let path = path().context("no credentials file: set HOME or EPHEMERA_CREDENTIALS")?;
    let mut map = load(&path);
    map.insert(endpoint.trim_end_matches('/').to_string(), saved);
    save(&path, &map)?;
    Ok(path)
}

/// Forgets the token of `endpoint`.
pub fn remove(endpoint: &str) -> anyhow::Result<()> {
    let Some(path) = path() else { return Ok(()) };
    let mut map = load(&path);
    if map.remove(endpoint.trim_end_matches('/')).is_some() {
        save(&path, &map)?;
    }
    Ok(())
}
