//! Trust in a `volley.toml` found in the working directory, as direnv and mise ask for it.
//!
//! A file nobody named could come with a cloned repository. The settings that decide where a
//! credential (or an answer) is sent — [`ROUTING_KEYS`], and a Redis `cache` — where answers
//! come from without asking the provider (a disk `cache`: the repository could ship one),
//! and those that may pay for a request more than once ([`DUPLICATING_KEYS`]: hedging; more
//! retries than the default, or a timeout shorter than the default, each abandoned attempt
//! perhaps billed) are taken from it only once the user ran `volley config trust` in that
//! directory, which records the file's BLAKE3 hash and path in the user's configuration
//! directory (`$XDG_CONFIG_HOME/volley/trusted`, else `~/.config/volley/trusted`). Any change
//! to the file makes it untrusted again, and so does a change to a file it names (a CA, a
//! client certificate or key: the hash covers their bytes too, as they were when trusted; a
//! `git pull` that swaps the CA under a file left as it is must not keep it trusted). A file
//! named with `--config` is trusted: the user
//! chose it. The other settings (concurrency, limits, fewer retries, longer timeouts, a memory
//! cache) send nothing anywhere and always apply.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::UsageError;

/// Keys that decide where the API key, prompts or answers go.
pub(crate) const ROUTING_KEYS: &[&str] = &[
    "base_url",
    "api_key_env",
    "allow_plain_http",
    "shared_limit",
    "provider",
    "proxy",
    // Which hosts bypass the user's proxy (`NO_PROXY` gives way to it): a key sent in plain
    // text through a proxy the user chose to avoid for that host, or around one relied on.
    "no_proxy",
    "endpoints",
    // Where Azure requests go, and a CA that would let a proxy read the traffic.
    "azure_endpoint",
    "ca_cert",
    // The whole system store trusted, and a local key and certificate (any PEM the file
    // names) presented as the user's identity.
    "native_roots",
    "client_cert",
    "client_key",
    // Plain text to a remote Redis, or a CA of the file's choosing for it, would let the
    // network read prompts and answers.
    "allow_plain_redis",
    "redis_ca_cert",
    // Which of the user's secrets keys the Redis cache's entries, as api_key_env picks the key.
    "cache_secret_env",
];

/// Keys that send requests twice on purpose: a hedged request may be billed twice, so a file
/// nobody named cannot turn hedging on.
pub(crate) const DUPLICATING_KEYS: &[&str] = &["hedge", "hedge_budget"];

/// Whether `key = value` in a file needs the file trusted: a [`ROUTING_KEYS`] key, a `cache`
/// other than `off` or `memory` (Redis receives every answer; a disk cache the repository
/// ships answers in the provider's place), a [`DUPLICATING_KEYS`] key, `max_retries` above
/// the default or a `timeout` below it (a request cut off after it was sent may be billed,
/// and is sent again).
pub(crate) fn routes(key: &str, value: &toml::Value) -> bool {
    ROUTING_KEYS.contains(&key)
        || DUPLICATING_KEYS.contains(&key)
        || (key == "cache" && value.as_str().is_some_and(stores_elsewhere))
        || (key == "max_retries" && more_retries_than_default(value))
        || (key == "timeout" && shorter_than_default(value))
}

/// Whether a `cache` value keeps answers outside this process: in Redis (any spelling of its
/// scheme, valid or not) or on disk. `off`, `none` and `memory` do not; other values are left
/// to the settings' own check.
fn stores_elsewhere(value: &str) -> bool {
    use super::values::CacheSpec;
    let value = value.trim();
    value.to_ascii_lowercase().starts_with("redis")
        || matches!(
            value.parse::<CacheSpec>(),
            Ok(CacheSpec::Disk(_) | CacheSpec::Redis(_))
        )
}

/// Whether a `max_retries` value is above the default (a value that is no number is left to
/// the settings' own check).
fn more_retries_than_default(value: &toml::Value) -> bool {
    let n = match value {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    n.is_some_and(|n| n > u64::from(super::DEFAULT_MAX_RETRIES))
}

/// Whether a `timeout` value is below the default (0 turns the timeout off: not shorter).
fn shorter_than_default(value: &toml::Value) -> bool {
    let timeout = match value {
        toml::Value::Integer(n) => u64::try_from(*n).ok().map(std::time::Duration::from_secs),
        toml::Value::Float(f) => std::time::Duration::try_from_secs_f64(*f).ok(),
        toml::Value::String(s) => s
            .parse::<volley::core::duration::HumanDuration>()
            .ok()
            .map(|d| d.0),
        _ => None,
    };
    timeout.is_some_and(|t| !t.is_zero() && t < volley::DEFAULT_TIMEOUT)
}

/// The file of trusted `volley.toml`s: one `HASH PATH` line each.
fn store_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        })?;
    Some(base.join("volley").join("trusted"))
}

/// The record of `path` with the bytes `text`: `HASH PATH`, the path canonical. `None` when
/// the path cannot be resolved or cannot be written on one line as it is: one holding a line
/// break would write a second, forged record; one that is not UTF-8 would be shown lossily,
/// the same as another path.
fn entry(path: &Path, text: &[u8]) -> Option<String> {
    let (path, shown) = record_path(path)?;
    Some(format!("{} {shown}", digest(&path, text).to_hex()))
}

/// The canonical path of a record, and as it is written in it; see [`entry`].
fn record_path(path: &Path) -> Option<(PathBuf, String)> {
    let path = std::fs::canonicalize(path).ok()?;
    let shown = path
        .to_str()
        .filter(|p| !p.contains(['\n', '\r']))?
        .to_owned();
    Some((path, shown))
}

/// What a trust record holds of the file at `path` (canonical), whose bytes are `text`: their
/// hash, or, when its path settings name files ([`named_files`]), the hash of its bytes and
/// of each named file's path and bytes as they are now ([`hash_named`]). A file that names
/// none keeps the plain hash of its bytes, as records made before had it.
fn digest(path: &Path, text: &[u8]) -> blake3::Hash {
    let named = named_files(path, text);
    if named.is_empty() {
        return blake3::hash(text);
    }
    let mut hasher = blake3::Hasher::new_derive_key("volley 2026-12 trusted volley.toml");
    let field = |hasher: &mut blake3::Hasher, bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(&mut hasher, text);
    for file in named {
        field(&mut hasher, file.to_string_lossy().as_bytes());
        hash_named(&mut hasher, &file);
    }
    hasher.finalize()
}

/// Adds what `file` is now to `hasher`: a regular file's bytes (read as a stream, whatever
/// its size), or only that it is missing, or something else (a directory, a device, a pipe:
/// never opened, since reading `/dev/zero` would not end and opening a pipe blocks).
fn hash_named(hasher: &mut blake3::Hasher, file: &Path) {
    match std::fs::metadata(file) {
        Ok(meta) if meta.is_file() => match std::fs::File::open(file) {
            Ok(mut opened) => {
                hasher.update(b"F");
                if hasher.update_reader(&mut opened).is_err() {
                    hasher.update(b"unreadable");
                }
            }
            Err(_) => {
                hasher.update(b"U");
            }
        },
        Ok(_) => {
            hasher.update(b"O");
        }
        Err(_) => {
            hasher.update(b"-");
        }
    }
}

/// The files the path settings of the file at `path` name, in any of its profiles, resolved
/// as the settings are (from the file's directory), sorted, each once. None when the text is
/// no TOML (the settings' own check refuses it).
fn named_files(path: &Path, text: &[u8]) -> Vec<PathBuf> {
    let Some(table) = std::str::from_utf8(text)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
    else {
        return Vec::new();
    };
    let base = path.parent();
    let mut found = Vec::new();
    // Tables only: the arrays of tables (`[[default.endpoints]]`) have no path settings.
    let mut tables: Vec<&toml::Table> = vec![&table];
    while let Some(table) = tables.pop() {
        for (key, value) in table {
            match value {
                toml::Value::Table(inner) => tables.push(inner),
                toml::Value::String(named)
                    if super::file::PATH_KEYS.contains(&key.as_str())
                        && !named.trim().is_empty() =>
                {
                    found.push(super::file::resolve_path(named, base));
                }
                _ => {}
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Whether the file at `path`, whose bytes are `text`, was trusted as it is now. The files
/// it names are looked at only when a record of its path exists: a file nobody trusted never
/// makes volley open the paths it gives.
pub(crate) fn is_trusted(path: &Path, text: &[u8]) -> bool {
    let (Some(store), Some((path, shown))) = (store_path(), record_path(path)) else {
        return false;
    };
    let Ok(trusted) = std::fs::read_to_string(store) else {
        return false;
    };
    let suffix = format!(" {shown}");
    if !trusted.lines().any(|line| line.ends_with(&suffix)) {
        return false;
    }
    let entry = format!("{}{suffix}", digest(&path, text).to_hex());
    trusted.lines().any(|line| line == entry)
}

/// `volley config trust [PATH]`: records the file's hash; returns what to tell the user.
///
/// # Errors
/// A [`UsageError`] when the file cannot be read or the record cannot be written.
pub(crate) fn trust(path: &Path) -> Result<String, UsageError> {
    let text =
        std::fs::read(path).map_err(|e| UsageError(format!("reading {}: {e}", path.display())))?;
    let store = store_path().ok_or_else(|| {
        UsageError("neither XDG_CONFIG_HOME nor HOME is set: nowhere to record trust".into())
    })?;
    let entry = entry(path, &text).ok_or_else(|| {
        UsageError(format!(
            "cannot trust {}: its path cannot be resolved, or is not UTF-8 without line \
             breaks; name the file with --config instead",
            path.display()
        ))
    })?;
    if let Some(dir) = store.parent() {
        create_private_dir(dir)
            .map_err(|e| UsageError(format!("creating {}: {e}", dir.display())))?;
    }
    if !is_trusted(path, &text) {
        let mut file = private_append(&store)
            .map_err(|e| UsageError(format!("writing {}: {e}", store.display())))?;
        writeln!(file, "{entry}")
            .map_err(|e| UsageError(format!("writing {}: {e}", store.display())))?;
    }
    Ok(format!(
        "trusted {} as it is now, with the files it names (recorded in {}); any change to \
         them needs `volley config trust` again",
        path.display(),
        store.display()
    ))
}

/// The message for settings ignored from an untrusted file.
pub(crate) fn ignored_message(label: &str, keys: &[String]) -> String {
    format!(
        "volley: ignoring {} from {label}: this volley.toml was found in the working directory \
         and is not trusted, and these settings decide where your API key, prompts or answers \
         go or come from (a disk or Redis cache), which secret keys a Redis cache, or may pay \
         for a request more than once (hedging, more retries, a shorter timeout). Check the \
         file, then run `volley config trust` to use them (or name the file with --config). \
         Other settings in it apply.",
        keys.join(", ")
    )
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn private_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_needs_trust() {
        let s = |v: &str| toml::Value::String(v.to_owned());
        assert!(routes("base_url", &s("https://x")));
        assert!(routes("cache", &s("redis://h:6379")));
        assert!(routes("cache", &s(" Rediss://h")));
        // A disk cache the repository ships would answer in the provider's place.
        assert!(routes("cache", &s("disk:.volley-cache")));
        assert!(!routes("cache", &s("memory")));
        assert!(!routes("cache", &s(" off")));
        assert!(!routes("cache", &s("none")));
        // More retries, or a shorter timeout, may pay for a request more than once.
        let int = toml::Value::Integer;
        assert!(routes("max_retries", &int(4)));
        assert!(!routes("max_retries", &int(3)));
        assert!(!routes("max_retries", &int(0)));
        assert!(routes("timeout", &s("2s")));
        assert!(routes("timeout", &int(30)));
        assert!(!routes("timeout", &s("10m")));
        assert!(!routes("timeout", &s("1h")));
        assert!(!routes("timeout", &int(0)));
        assert!(!routes("concurrency", &toml::Value::Integer(4)));
        assert!(routes("hedge", &s("p95")));
        assert!(routes("hedge_budget", &s("100%")));
        assert!(routes("cache_secret_env", &s("AWS_SECRET_ACCESS_KEY")));
    }

    /// A record covers the files the file names (a CA, a client key), as they were: one
    /// swapped, made, or removed under a file left as it is changes the record. A file naming
    /// none keeps the plain hash of its bytes (the records made before).
    #[test]
    fn a_record_covers_the_files_a_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let config = dir.join("volley.toml");
        let text =
            b"[default]\nbase_url = \"https://x\"\n\n[profile.corp]\nca_cert = \"certs/ca.pem\"\n";
        std::fs::write(&config, text).unwrap();
        std::fs::create_dir(dir.join("certs")).unwrap();
        let ca = dir.join("certs").join("ca.pem");
        assert_eq!(named_files(&config, text), std::slice::from_ref(&ca));
        let missing = digest(&config, text);
        std::fs::write(&ca, "first CA").unwrap();
        let first = digest(&config, text);
        assert_ne!(first, missing);
        assert_eq!(
            digest(&config, text),
            first,
            "the same bytes, the same record"
        );
        std::fs::write(&ca, "another CA").unwrap();
        assert_ne!(digest(&config, text), first);
        std::fs::remove_file(&ca).unwrap();
        assert_eq!(digest(&config, text), missing);
        let plain = b"[default]\nconcurrency = 4\n";
        assert_eq!(digest(&config, plain), blake3::hash(plain));
    }

    /// A path with a line break would write a second record, trusting a file nobody checked:
    /// it gets no record at all.
    #[test]
    fn a_path_with_a_line_break_gets_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("volley.toml");
        std::fs::write(&plain, "[default]\n").unwrap();
        let record = entry(&plain, b"[default]\n").unwrap();
        assert_eq!(record.lines().count(), 1);
        assert!(record.ends_with("volley.toml"), "{record}");
        let forged = format!("x\n{} evil", blake3::hash(b"evil").to_hex());
        let odd = dir.path().join(forged);
        std::fs::create_dir(&odd).unwrap();
        let file = odd.join("volley.toml");
        std::fs::write(&file, "[default]\n").unwrap();
        assert_eq!(entry(&file, b"[default]\n"), None);
    }
}
