//! The layers, merged with figment: flags over `VOLLEY_*` variables over the `volley.toml`
//! profile over the ecosystem's variables over defaults, and where each value came from.

use std::path::PathBuf;

use clap::Args;
use figment::providers::Env;
use figment::value::{Dict, UncasedStr};
use figment::{Figment, Profile, Provider};

use volley::anthropic;

use super::file::{self, is_secret_key};
use super::model::{self, Group};
use super::origin::{Layer, Origin, env_name, usage_error};
use super::{ENV_PREFIX, UsageError};

/// The ecosystem's own variables, by the key they set and whether Anthropic's SDK (rather
/// than OpenAI's) reads them: below `volley.toml`, so a globally exported `OPENAI_BASE_URL`
/// never overrides a profile. Only the variables of the provider in force apply (with
/// `--provider anthropic`, `ANTHROPIC_BASE_URL` and not `OPENAI_BASE_URL`).
/// `ANTHROPIC_BASE_URL` is read the SDK's way, without `/v1`, which is appended.
/// (`HTTPS_PROXY`, `NO_PROXY`, `SSL_CERT_FILE` and `SSL_CERT_DIR` are read by the library
/// itself, by curl's and OpenSSL's rules, when no setting of Volley's own names a proxy, a
/// bypass list or a CA.)
const ECOSYSTEM: &[(&str, &str, bool)] = &[
    (volley::BASE_URL_ENV, "base_url", false),
    (volley::API_VERSION_ENV, "api_version", false),
    (volley::AZURE_ENDPOINT_ENV, "azure_endpoint", false),
    (anthropic::BASE_URL_VARIABLE, "base_url", true),
];

/// Where settings come from, and `--print-config`: taken by every command that reads
/// settings.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Settings")]
pub(crate) struct SourceArgs {
    /// The volley.toml profile to use: [profile.NAME], alone (it is not merged over
    /// [default]) [default: [default], when present].
    #[arg(long, value_name = "NAME")]
    pub(crate) profile: Option<String>,
    /// The configuration file [default: ./volley.toml, when present].
    #[arg(long, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Print the settings in force and where each comes from (flag, $VOLLEY_*, the
    /// volley.toml profile, an ecosystem variable such as $OPENAI_BASE_URL, or default),
    /// then exit.
    #[arg(long)]
    pub(crate) print_config: bool,
}

/// The settings' layers, merged.
pub(crate) struct Layers {
    figment: Figment,
    /// `volley.toml [profile.prod]`, when a profile applies.
    profile: Option<String>,
    /// The keys an untrusted `volley.toml` set and that were left out.
    ignored: Vec<String>,
}

/// One line of `--print-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) key: &'static str,
    pub(crate) value: String,
    pub(crate) origin: String,
}

impl Layers {
    /// Reads the environment and `volley.toml` (as `sources` say) and merges them with
    /// `flags` (each a flags struct of a group) and the command's own `defaults` (keys whose
    /// default differs from the group's).
    ///
    /// # Errors
    /// A [`UsageError`] for a `VOLLEY_*` variable that would carry a key, an invalid
    /// `volley.toml`, or a flag that cannot be serialised.
    pub(crate) fn load(
        sources: &SourceArgs,
        flags: &[&dyn erased::Flags],
        defaults: Dict,
    ) -> Result<Layers, UsageError> {
        // Volley's own layers, highest last; the provider they set decides the defaults and
        // the ecosystem's variables below them.
        let profile = file::load_profile(sources.config.as_deref(), sources.profile.as_deref())?;
        let label = profile.as_ref().map(|p| p.label.clone());
        let ignored = profile
            .as_ref()
            .map(|p| p.ignored.clone())
            .unwrap_or_default();
        let mut own: Vec<Layer> = profile.map(|p| p.layer).into_iter().collect();
        own.push(env_layer()?);
        for group in flags {
            own.push(group.layer()?);
        }
        let anthropic = provider_of(&own) == volley::Provider::Anthropic;

        let mut figment = Figment::new();
        if anthropic {
            let mut values = Dict::new();
            values.insert("base_url".to_owned(), anthropic::DEFAULT_BASE_URL.into());
            values.insert("api_key_env".to_owned(), anthropic::KEY_VARIABLES[0].into());
            figment = figment.merge(Layer::new(Origin::Default, values));
        }
        figment = figment.merge(Layer::new(Origin::Default, defaults));
        for (variable, key, for_anthropic) in ECOSYSTEM {
            if *for_anthropic != anthropic {
                continue;
            }
            if let Some(mut value) = non_empty_var(variable) {
                if *variable == anthropic::BASE_URL_VARIABLE {
                    value = anthropic::base_url_from_sdk(&value);
                }
                let mut values = Dict::new();
                values.insert((*key).to_owned(), value.into());
                figment = figment.merge(Layer::new(
                    Origin::Ecosystem((*variable).to_owned()),
                    values,
                ));
            }
        }
        for layer in own {
            figment = figment.merge(layer);
        }
        Ok(Layers {
            figment,
            profile: label,
            ignored,
        })
    }

    /// Refuses to send when an untrusted `volley.toml` chose where requests go (its base URL,
    /// endpoints, Azure endpoint or provider were left out) and the command line did not: the
    /// requests would go, with whatever key is exported, to the default destination, which is
    /// neither what the file says nor what the user asked for. A base URL, endpoints or Azure
    /// endpoint from a flag or a `VOLLEY_*` variable is a destination of the user's own (a
    /// `--base-url` replaces the file's endpoints), as is a provider given that way when the
    /// file's provider was left out. With `--mock` nothing leaves the process.
    ///
    /// # Errors
    /// A [`UsageError`] naming the keys and how to trust the file.
    pub(crate) fn check_destination(&self, mock: bool) -> Result<(), UsageError> {
        // Not `api_key_env`: left out, the default key goes to the destination in force,
        // as it would without the file.
        const WHERE: &[&str] = &["base_url", "endpoints", "azure_endpoint"];
        if mock {
            return Ok(());
        }
        let given = |key: &str| matches!(self.origin(key), Origin::Flag | Origin::Env);
        let left_out = |key: &str| self.ignored.iter().any(|k| k == key);
        let mut missing: Vec<&str> = Vec::new();
        if WHERE.iter().any(|key| left_out(key)) && !WHERE.iter().any(|key| given(key)) {
            missing.extend(WHERE.iter().copied().filter(|key| left_out(key)));
        }
        if left_out("provider") && !given("provider") {
            missing.push("provider");
        }
        if missing.is_empty() {
            return Ok(());
        }
        let label = self.profile.as_deref().unwrap_or("volley.toml");
        Err(UsageError(format!(
            "{label} sets {}, which decide where requests go, and it is not trusted: nothing \
             was sent (the default destination is not what the file asked for either). Check \
             the file, then run `volley config trust` (or name it with --config), or give the \
             destination yourself ({})",
            missing.join(", "),
            if missing == ["provider"] {
                "--provider, or VOLLEY_PROVIDER"
            } else {
                "--base-url, or VOLLEY_BASE_URL"
            }
        )))
    }

    /// The group's settings in force.
    ///
    /// # Errors
    /// A value that does not parse, named with where it was set.
    pub(crate) fn extract<G: Group>(&self) -> Result<G, UsageError> {
        self.figment.extract_lossy().map_err(usage_error)
    }

    /// The group's settings as `--print-config` shows them, each with its origin.
    pub(crate) fn rows<G: Group>(&self, group: &G) -> Vec<Row> {
        group
            .shown()
            .into_iter()
            .map(|(key, value)| Row {
                key,
                value,
                origin: self.origin(key).describe(key),
            })
            .collect()
    }

    /// Where the value of `key` came from.
    pub(crate) fn origin(&self, key: &str) -> Origin {
        self.figment
            .find_metadata(key)
            .map_or(Origin::Default, Origin::of)
    }

    /// `rows`, one per line, then the profile in force.
    pub(crate) fn render(&self, rows: &[Row]) -> String {
        let mut text = String::new();
        for row in rows {
            text.push_str(&format!(
                "{:<16} {:<40} ({})\n",
                row.key, row.value, row.origin
            ));
        }
        text.push_str(&format!(
            "{:<16} {}\n",
            "profile",
            self.profile.as_deref().unwrap_or("none")
        ));
        // Values may come from a file nobody named: no terminal escapes.
        crate::terminal_safe(&text).into_owned()
    }
}

/// The `VOLLEY_*` variables of every group's keys; empty ones count as unset.
fn env_layer() -> Result<Layer, UsageError> {
    refuse_keys_in_environment()?;
    let keys = model::all_keys();
    warn_unknown_variables(&keys);
    let env = Env::prefixed(ENV_PREFIX)
        .only(&keys)
        .filter(|key: &UncasedStr| non_empty_var(&env_name(key.as_str())).is_some());
    let mut data = env.data().map_err(usage_error)?;
    let values = data.remove(&Profile::Default).unwrap_or_default();
    Ok(Layer::new(Origin::Env, values))
}

/// Every `VOLLEY_*` variable set (the prefix in any case), as its name and the rest of it.
fn volley_variables() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(name, _)| {
        let name = name.to_string_lossy().into_owned();
        let rest = name
            .get(..ENV_PREFIX.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(ENV_PREFIX))
            .and_then(|_| name.get(ENV_PREFIX.len()..))?
            .to_owned();
        Some((name, rest))
    })
}

/// Says which `VOLLEY_*` variables name no setting, with the nearest setting's variable when
/// one is close: a typo such as `VOLLEY_CONCURENCY` would otherwise be ignored without a
/// word (a typo in `volley.toml` is an error). `VOLLEY_REQUIRE_*` and `VOLLEY_TEST_*` belong to
/// the test suite.
fn warn_unknown_variables(keys: &[&str]) {
    for (name, rest) in volley_variables() {
        let upper = rest.to_ascii_uppercase();
        if rest.is_empty()
            || keys.iter().any(|key| key.eq_ignore_ascii_case(&rest))
            || upper.starts_with("REQUIRE_")
            || upper.starts_with("TEST_")
        {
            continue;
        }
        let nearest = keys
            .iter()
            .map(|key| (strsim::levenshtein(&key.to_ascii_uppercase(), &upper), key))
            .min()
            .filter(|(distance, _)| *distance <= 2)
            .map(|(_, key)| format!(" (did you mean {ENV_PREFIX}{}?)", key.to_ascii_uppercase()))
            .unwrap_or_default();
        say!("volley: ignoring {name}: no setting has that name{nearest}");
    }
}

/// `VOLLEY_API_KEY` (or any `VOLLEY_*` named like a key) is refused, as a key in
/// `volley.toml` is: the key is read only from the variable `api_key_env` names.
fn refuse_keys_in_environment() -> Result<(), UsageError> {
    for (name, rest) in volley_variables() {
        let rest = rest.as_str();
        if file::names_a_secret(rest) {
            return Err(UsageError(format!(
                "{name} is set, and volley never reads a secret from a VOLLEY_* variable: put a \
                 Redis cache's secret in a variable of its own, name it with --cache-secret-env \
                 NAME (VOLLEY_CACHE_SECRET_ENV, or cache_secret_env in volley.toml), and unset \
                 {name}"
            )));
        }
        if is_secret_key(rest) {
            return Err(UsageError(format!(
                "{name} is set, and volley never reads an API key from a VOLLEY_* variable (nor \
                 from a flag or volley.toml): put the key in OPENAI_API_KEY, or in another \
                 variable named with --api-key-env NAME (VOLLEY_API_KEY_ENV, or api_key_env in \
                 volley.toml), and unset {name}"
            )));
        }
    }
    Ok(())
}

/// The provider the highest of `layers` that sets one names; OpenAI when none does (a name
/// that does not parse is reported when the settings are extracted).
fn provider_of(layers: &[Layer]) -> volley::Provider {
    layers
        .iter()
        .rev()
        .find_map(|layer| layer.value("provider"))
        .and_then(|value| value.as_str().map(str::parse))
        .and_then(Result::ok)
        .unwrap_or_default()
}

fn non_empty_var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Flags structs of different groups, behind one type.
pub(crate) mod erased {
    use super::super::origin::{Layer, Origin};
    use super::UsageError;

    /// A flags struct: serialises into the flags layer.
    pub(crate) trait Flags {
        fn layer(&self) -> Result<Layer, UsageError>;
    }

    impl<T: serde::Serialize> Flags for T {
        fn layer(&self) -> Result<Layer, UsageError> {
            Layer::serialized(Origin::Flag, self)
        }
    }
}
