//! `volley.toml`: its profiles, checked whole (every profile, whichever is used), and the
//! one in force.

use std::path::{Path, PathBuf};

use figment::Figment;

use super::origin::{Layer, Origin};
use super::{UsageError, model};

/// The file read from the working directory when `--config` is not given.
pub(crate) const CONFIG_FILE: &str = "volley.toml";

/// The profile in force: a layer of settings, labelled `volley.toml [profile.prod]`.
pub(crate) struct FileProfile {
    pub(crate) label: String,
    pub(crate) layer: Layer,
    /// The keys left out because the file is not trusted.
    pub(crate) ignored: Vec<String>,
}

/// Loads the profile in force: from `explicit` (`--config`, which must exist) or else
/// `./volley.toml` when present; `[profile.NAME]` when `name` is given, else the default
/// profile when the file has one.
///
/// # Errors
/// An unreadable or invalid file, a missing profile, `--profile` without a file, or an API
/// key in the file.
pub(crate) fn load_profile(
    explicit: Option<&Path>,
    name: Option<&str>,
) -> Result<Option<FileProfile>, UsageError> {
    let path = match explicit {
        Some(path) => path.to_owned(),
        None => {
            let default = PathBuf::from(CONFIG_FILE);
            if default.is_file() {
                default
            } else if let Some(name) = name {
                return Err(UsageError(format!(
                    "--profile {name}: there is no {CONFIG_FILE} here; name one with --config PATH"
                )));
            } else {
                return Ok(None);
            }
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| UsageError(format!("reading {}: {e}", path.display())))?;
    // A file the user named is theirs; one found here may have come with a clone.
    let trusted = explicit.is_some() || super::trust::is_trusted(&path, text.as_bytes());
    let origin = path.display().to_string();
    // Its relative paths are the file's, wherever volley runs (and, for a link, where the file
    // itself is: a trusted file's paths never point into the directory of a link to it).
    let base = std::fs::canonicalize(&path)
        .ok()
        .and_then(|file| file.parent().map(Path::to_path_buf));
    let (mut profile, ignored) =
        parse_profile_with_trust(&text, name, &origin, trusted, base.as_deref())?;
    if let (Some(profile), false) = (&mut profile, ignored.is_empty()) {
        say!(
            "{}",
            super::trust::ignored_message(&profile.label, &ignored)
        );
        profile.ignored = ignored;
    }
    Ok(profile)
}

/// Parses `volley.toml` text and returns the profile `name` (or the default one); `origin`
/// names the file in messages.
///
/// # Errors
/// As [`load_profile`].
#[cfg(test)]
pub(crate) fn parse_profile(
    text: &str,
    name: Option<&str>,
    origin: &str,
) -> Result<Option<FileProfile>, UsageError> {
    parse_profile_with_trust(text, name, origin, true, None).map(|(profile, _)| profile)
}

/// The settings whose values are paths: resolved against the directory of the file that
/// gives them.
pub(super) const PATH_KEYS: [&str; 4] = ["ca_cert", "client_cert", "client_key", "redis_ca_cert"];

/// `path` with a leading `~` (alone, or before `/`) replaced by the home directory, as a
/// shell would; unchanged without `HOME`. `disk:~/cache` in a file, or in a flag the shell
/// did not expand, is the home directory's, not a directory named `~` where volley runs.
pub(crate) fn expand_home(path: &str) -> PathBuf {
    let rest = match path.strip_prefix('~') {
        Some("") => "",
        Some(rest) if rest.starts_with('/') => &rest[1..],
        _ => return PathBuf::from(path),
    };
    match std::env::var_os("HOME").filter(|home| !home.is_empty()) {
        Some(home) => PathBuf::from(home).join(rest),
        None => PathBuf::from(path),
    }
}

/// A path a file in `base` gives: `~` expanded, a relative path taken from `base`.
pub(super) fn resolve_path(path: &str, base: Option<&Path>) -> PathBuf {
    let path = expand_home(path.trim());
    match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path,
    }
}

/// Resolves the paths of `table` (a profile of a file in `base`): `~` expanded, a relative
/// path taken from `base`. A disk `cache` too.
fn resolve_paths(table: &mut toml::Table, base: Option<&Path>) {
    // A directory whose name is not UTF-8 cannot be written into the file's text: its paths
    // stay as they are (relative to where volley runs, as before).
    let base = base.filter(|base| base.to_str().is_some());
    let resolve =
        |path: &str| -> String { resolve_path(path, base).to_string_lossy().into_owned() };
    for key in PATH_KEYS {
        // An empty path is left for the settings' own check to refuse.
        if let Some(toml::Value::String(path)) = table.get_mut(key)
            && !path.trim().is_empty()
        {
            *path = resolve(path);
        }
    }
    if let Some(toml::Value::String(cache)) = table.get_mut("cache")
        && let Some(path) = cache.trim().strip_prefix("disk:")
        && !path.trim().is_empty()
    {
        *cache = format!("disk:{}", resolve(path));
    }
}

/// [`parse_profile`], leaving out of the chosen profile the settings that decide where
/// something is sent unless the file is `trusted` (see [`super::trust`]); returns the keys
/// left out.
fn parse_profile_with_trust(
    text: &str,
    name: Option<&str>,
    origin: &str,
    trusted: bool,
    base: Option<&Path>,
) -> Result<(Option<FileProfile>, Vec<String>), UsageError> {
    let mut file: toml::Table = toml::from_str(text).map_err(|e| toml_error(origin, text, &e))?;
    let default = file.remove("default");
    let profiles = match file.remove("profile") {
        None => toml::Table::new(),
        Some(toml::Value::Table(profiles)) => profiles,
        Some(_) => {
            return Err(UsageError(format!(
                "{origin}: `profile` must be tables such as [profile.prod]"
            )));
        }
    };
    if let Some(key) = file.keys().next() {
        return Err(if is_secret_key(key) {
            secret_error(origin, key)
        } else {
            UsageError(format!(
                "{origin}: unknown key `{key}` at the top level; expected [default] or \
                 [profile.NAME] tables"
            ))
        });
    }
    // Every profile is checked, not only the one in force: a typo should not wait for the
    // day its profile is used, and a key anywhere in the file is a leak.
    let mut tables = Vec::with_capacity(profiles.len() + 1);
    if let Some(default) = default {
        tables.push(("default".to_owned(), format!("{origin} [default]"), default));
    }
    for (profile, table) in profiles {
        let label = format!("{origin} [profile.{profile}]");
        tables.push((profile, label, table));
    }
    let mut chosen = None;
    let mut ignored = Vec::new();
    let wanted = name.unwrap_or("default");
    for (profile, label, value) in tables {
        let toml::Value::Table(mut table) = value else {
            return Err(UsageError(format!("{label} must be a table")));
        };
        resolve_paths(&mut table, base);
        let mut layer = check_table(&table, &label)?;
        if profile == wanted && !trusted {
            table.retain(|key, value| {
                let routes = super::trust::routes(key, value);
                if routes {
                    ignored.push(key.to_string());
                }
                !routes
            });
            layer = Layer::serialized(Origin::Profile(label.clone()), &table)?;
        }
        if profile == wanted {
            if chosen.is_some() {
                return Err(UsageError(format!(
                    "{origin}: both [default] and [profile.default] are set; keep one"
                )));
            }
            chosen = Some(FileProfile {
                label,
                layer,
                ignored: Vec::new(),
            });
        }
    }
    match (chosen, name) {
        (Some(profile), _) => Ok((Some(profile), ignored)),
        (None, None) => Ok((None, ignored)),
        (None, Some(name)) => Err(UsageError(format!(
            "--profile {name}: {origin} has no [profile.{name}]"
        ))),
    }
}

/// A TOML syntax error by line and column, with the parser's message but never the source
/// line it would quote (which may hold a Redis password).
fn toml_error(origin: &str, text: &str, e: &toml::de::Error) -> UsageError {
    let at = e.span().map_or(String::new(), |span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(" at line {line}, column {column}")
    });
    UsageError(format!("{origin}: invalid TOML{at}: {}", e.message()))
}

/// Whether a key names a secret: refused in `volley.toml` and as `VOLLEY_<KEY>`.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "key"
        || key.ends_with("api_key")
        || key.ends_with("apikey")
        || key == "token"
        || names_a_secret(&key)
}

/// Whether a key names a secret other than a key (`cache_secret`): such a value would be a Redis
/// cache's secret, which only the variable `cache_secret_env` names is read for
/// (`VOLLEY_CACHE_SECRET` would otherwise be ignored in silence).
pub(crate) fn names_a_secret(key: &str) -> bool {
    key.to_ascii_lowercase().ends_with("secret")
}

/// A table of settings checked against every group: known keys, no secret, values that
/// parse.
fn check_table(table: &toml::Table, label: &str) -> Result<Layer, UsageError> {
    for key in table.keys() {
        if is_secret_key(key) {
            return Err(secret_error(label, key));
        }
        if !model::is_known(key) {
            return Err(UsageError(format!(
                "{label}: unknown key `{key}`; known keys: {}",
                model::all_keys().join(", ")
            )));
        }
    }
    let figment = Figment::from(Layer::serialized(Origin::Profile(label.to_owned()), table)?);
    for group in model::GROUPS {
        (group.check)(&figment)?;
    }
    Layer::serialized(Origin::Profile(label.to_owned()), table)
}

fn secret_error(place: &str, key: &str) -> UsageError {
    if names_a_secret(key) {
        return UsageError(format!(
            "{place}: `{key}` is not allowed: secrets never go in a config file. Put a Redis \
             cache's secret in an environment variable and name it with cache_secret_env = \
             \"NAME\" (or --cache-secret-env NAME)"
        ));
    }
    UsageError(format!(
        "{place}: `{key}` is not allowed: API keys never go in a config file. Put the key in \
         an environment variable and name it with api_key_env = \"NAME\" (or --api-key-env \
         NAME)"
    ))
}

#[cfg(test)]
mod tests {
    use super::super::model::{Attempts, RunLoad};
    use super::*;

    fn profile(text: &str, name: Option<&str>) -> Option<FileProfile> {
        parse_profile(text, name, "volley.toml").unwrap()
    }

    #[test]
    fn toml_errors_never_quote_the_source() {
        let text = "[default]\ncache = \"redis://:hunter2-secret@h:6379\n";
        let err = profile_err(text, None);
        assert!(!err.contains("hunter2-secret"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    /// A file's relative paths are its own directory's, `~` is the home directory, and an
    /// absolute path stays as it is.
    #[test]
    fn paths_in_a_file_are_resolved_against_its_directory() {
        let home = std::env::var("HOME").unwrap_or_default();
        let text = "[default]\nca_cert = \"ca.pem\"\nclient_key = \"/etc/k.pem\"\n\
                    redis_ca_cert = \"~/r.pem\"\ncache = \"disk:.volley-cache\"\n\n\
                    [profile.p]\ncache = \"disk:~/vc\"\n";
        let base = Path::new("/srv/project");
        let (profile, _) =
            parse_profile_with_trust(text, None, "volley.toml", true, Some(base)).unwrap();
        let figment = Figment::from(profile.unwrap().layer);
        let get = |key: &str| figment.extract_inner::<String>(key).unwrap();
        assert_eq!(get("ca_cert"), "/srv/project/ca.pem");
        assert_eq!(get("client_key"), "/etc/k.pem");
        if !home.is_empty() {
            assert_eq!(
                PathBuf::from(get("redis_ca_cert")),
                Path::new(&home).join("r.pem")
            );
        }
        assert_eq!(get("cache"), "disk:/srv/project/.volley-cache");
        let (profile, _) =
            parse_profile_with_trust(text, Some("p"), "volley.toml", true, Some(base)).unwrap();
        let figment = Figment::from(profile.unwrap().layer);
        if !home.is_empty() {
            let cache = figment.extract_inner::<String>("cache").unwrap();
            assert_eq!(
                cache,
                format!("disk:{}", Path::new(&home).join("vc").display())
            );
        }
        assert_eq!(
            expand_home("~x/y"),
            PathBuf::from("~x/y"),
            "another user's: as it is"
        );
        assert_eq!(expand_home("a/~"), PathBuf::from("a/~"));
    }

    #[test]
    fn untrusted_files_keep_only_settings_that_send_nothing() {
        let text = "[default]\nbase_url = \"https://attacker.example/v1\"\n\
                    api_key_env = \"AWS_SECRET_ACCESS_KEY\"\ncache = \"redis://a.example\"\n\
                    concurrency = 7\n";
        let (profile, ignored) =
            parse_profile_with_trust(text, None, "volley.toml", false, None).unwrap();
        assert_eq!(ignored, ["api_key_env", "base_url", "cache"]);
        let figment = Figment::from(profile.unwrap().layer);
        assert!(figment.find_value("base_url").is_err());
        assert!(figment.find_value("api_key_env").is_err());
        assert_eq!(
            figment.find_value("concurrency").unwrap().to_i128(),
            Some(7)
        );
        let (_, ignored) = parse_profile_with_trust(text, None, "volley.toml", true, None).unwrap();
        assert!(ignored.is_empty());
    }

    fn profile_err(text: &str, name: Option<&str>) -> String {
        match parse_profile(text, name, "volley.toml") {
            Ok(_) => panic!("{text:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    fn load(profile: FileProfile) -> (RunLoad, Attempts) {
        let figment = Figment::from(profile.layer);
        (
            figment.extract_lossy().unwrap(),
            figment.extract_lossy().unwrap(),
        )
    }

    const FILE: &str = r#"
        [default]
        concurrency = 8
        rpm = 600

        [profile.prod]
        concurrency = 512
        timeout = "30s"
        cache = "disk:.volley-cache"
    "#;

    #[test]
    fn a_named_profile_is_used_alone_and_default_applies_without_one() {
        let default = profile(FILE, None).unwrap();
        assert_eq!(default.label, "volley.toml [default]");
        let (load_, _) = load(default);
        assert_eq!(load_.concurrency.get(), 8);
        assert_eq!(load_.rpm.get(), Some(600));

        let prod = profile(FILE, Some("prod")).unwrap();
        assert_eq!(prod.label, "volley.toml [profile.prod]");
        let (load_, attempts) = load(prod);
        assert_eq!(load_.concurrency.get(), 512);
        // Not merged over [default]: its rpm does not apply.
        assert_eq!(load_.rpm.get(), None);
        assert_eq!(attempts.timeout.0, std::time::Duration::from_secs(30));

        let p = profile("[profile.default]\nconcurrency = 4\n", None).unwrap();
        assert_eq!(load(p).0.concurrency.get(), 4);
        assert!(profile("[profile.prod]\nconcurrency = 4\n", None).is_none());
        assert!(profile("", None).is_none());
    }

    #[test]
    fn an_api_key_in_the_file_is_refused_without_echoing_it() {
        for text in [
            "[profile.prod]\napi_key = \"sk-file-secret\"\n",
            "[default]\nopenai_api_key = \"sk-file-secret\"\n",
            "api_key = \"sk-file-secret\"\n",
            "[profile.other]\ntoken = \"sk-file-secret\"\n[profile.prod]\nrpm = 1\n",
        ] {
            let err = profile_err(text, Some("prod"));
            assert!(err.contains("api_key_env"), "{err}");
            assert!(!err.contains("sk-file-secret"), "{err}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named_in_every_profile() {
        for (text, name, needles) in [
            (
                "[profile.prod]\nconcurency = 5\n",
                Some("prod"),
                &["`concurency`", "[profile.prod]", "concurrency"][..],
            ),
            ("[defaults]\nrpm = 1\n", None, &["`defaults`"]),
            (
                "[default]\nconcurrency = 0\n",
                None,
                &["`concurrency`", "nonzero"],
            ),
            ("[default]\nrpm = -1\n", None, &["`rpm`", "whole number"]),
            (
                "[default]\ntimeout = \"soon\"\n",
                None,
                &["`timeout`", "bare number"],
            ),
            (
                "[default]\ncache = \"redis\"\n",
                None,
                &["`cache`", "disk:PATH"],
            ),
            ("[default]\nlease = 0\n", None, &["`lease`"]),
            (
                "[default]\nredis_failure = \"open\"\n",
                None,
                &["`redis_failure`", "fail-closed"],
            ),
            (
                "[default]\nshared_limit = \"http://:hunter2@host:6379\"\n",
                None,
                &["`shared_limit`", "redis://"],
            ),
            (
                "[default]\nshared_prefix = \"a b\"\n",
                None,
                &["`shared_prefix`"],
            ),
            ("[default]\nrpm = \n", None, &["invalid TOML"]),
            // A profile not in force is checked too.
            (
                "[default]\nrpm = 1\n[profile.b]\nmax_retries = \"x\"\n",
                None,
                &["[profile.b]", "`max_retries`"],
            ),
            (
                "[profile.prod]\nrpm = 1\n",
                Some("staging"),
                &["[profile.staging]"],
            ),
            (
                "[default]\nrpm = 1\n[profile.default]\nrpm = 2\n",
                None,
                &["keep one"],
            ),
        ] {
            let err = profile_err(text, name);
            for needle in needles {
                assert!(err.contains(needle), "{text:?}: {err} lacks {needle}");
            }
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn secret_keys_are_recognised() {
        for key in [
            "api_key",
            "OPENAI_API_KEY",
            "apikey",
            "key",
            "token",
            "cache_secret",
            "CACHE_SECRET",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["api_key_env", "base_url", "cache", "cache_secret_env"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }
}
