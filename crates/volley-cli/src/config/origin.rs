//! Where a value came from: the providers of the layers carry it as their name, so figment
//! can tell the origin of every value (`--print-config`) and of every mistake (errors).

use figment::value::{Dict, Map};
use figment::{Metadata, Profile, Provider};

use super::UsageError;

/// The source of a value, from the highest precedence to the lowest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A command-line flag.
    Flag,
    /// A `VOLLEY_*` variable.
    Env,
    /// A profile of `volley.toml`, labelled `volley.toml [profile.NAME]` (the file's path as
    /// given).
    Profile(String),
    /// One of the ecosystem's own variables, such as `OPENAI_BASE_URL`.
    Ecosystem(String),
    /// Built in (or the command's own default).
    Default,
}

impl Origin {
    /// The name of a provider of this origin.
    fn name(&self) -> String {
        match self {
            Origin::Flag => "flag".to_owned(),
            Origin::Env => "env".to_owned(),
            Origin::Profile(label) => format!("profile {label}"),
            Origin::Ecosystem(variable) => format!("ecosystem {variable}"),
            Origin::Default => "default".to_owned(),
        }
    }

    /// The origin a provider's name stands for.
    pub(crate) fn of(metadata: &Metadata) -> Origin {
        let name = metadata.name.as_ref();
        if let Some(label) = name.strip_prefix("profile ") {
            Origin::Profile(label.to_owned())
        } else if let Some(variable) = name.strip_prefix("ecosystem ") {
            Origin::Ecosystem(variable.to_owned())
        } else {
            match name {
                "flag" => Origin::Flag,
                "env" => Origin::Env,
                _ => Origin::Default,
            }
        }
    }

    /// Where the value of `key` came from, for `--print-config`: `flag --rpm`,
    /// `$VOLLEY_RPM`, `volley.toml [profile.prod]`, `$OPENAI_BASE_URL`, `default`.
    pub(crate) fn describe(&self, key: &str) -> String {
        match self {
            Origin::Flag => format!("flag {}", flag_name(key)),
            Origin::Env => format!("${}", env_name(key)),
            Origin::Profile(label) => label.clone(),
            Origin::Ecosystem(variable) => format!("${variable}"),
            Origin::Default => "default".to_owned(),
        }
    }

    /// Where `key` was set, for an error message: `--rpm`, `VOLLEY_RPM`,
    /// ``volley.toml [profile.prod]: `rpm` ``, `OPENAI_BASE_URL`.
    fn place(&self, key: &str) -> String {
        match self {
            Origin::Flag => flag_name(key),
            Origin::Env => env_name(key),
            Origin::Profile(label) => format!("{label}: `{key}`"),
            Origin::Ecosystem(variable) => variable.clone(),
            Origin::Default => format!("the default of `{key}`"),
        }
    }
}

/// `max_retries` → `--max-retries`.
pub(crate) fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// `max_retries` → `VOLLEY_MAX_RETRIES`.
pub(crate) fn env_name(key: &str) -> String {
    format!("{}{}", super::ENV_PREFIX, key.to_ascii_uppercase())
}

/// A layer: a flat table of values and the origin they all share.
pub(crate) struct Layer {
    origin: Origin,
    values: Dict,
}

impl Layer {
    pub(crate) fn new(origin: Origin, values: Dict) -> Layer {
        Layer { origin, values }
    }

    /// The value this layer sets for `key`, if any.
    pub(crate) fn value(&self, key: &str) -> Option<&figment::value::Value> {
        self.values.get(key)
    }

    /// A layer of `value` serialised (a flags struct, a table of `volley.toml`).
    pub(crate) fn serialized(
        origin: Origin,
        value: &impl serde::Serialize,
    ) -> Result<Layer, UsageError> {
        let values = figment::value::Value::serialize(value)
            .ok()
            .and_then(figment::value::Value::into_dict)
            .ok_or_else(|| UsageError(format!("{}: not a table of settings", origin.name())))?;
        Ok(Layer::new(origin, values))
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.origin.name())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

/// A figment error as the user reads it: each mistake with the place it was made.
pub(crate) fn usage_error(error: figment::Error) -> UsageError {
    let messages: Vec<String> = error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let origin = e.metadata.as_ref().map_or(Origin::Default, Origin::of);
            format!("{}: {}", origin.place(&key), e.kind)
        })
        .collect();
    UsageError(messages.join("; "))
}
