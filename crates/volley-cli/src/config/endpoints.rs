//! Several endpoints: `--base-url` given more than once (same provider and key for all), or
//! `[[profile.NAME.endpoints]]` tables in `volley.toml` for the full form. The list is one
//! setting: base URLs from a layer above the tables' (a flag, `VOLLEY_BASE_URL`) replace
//! them; `OPENAI_BASE_URL` is only a default.
//!
//! ```toml
//! [[profile.prod.endpoints]]
//! url = "http://10.0.0.1:8000/v1"
//! weight = 2
//!
//! [[profile.prod.endpoints]]
//! url = "https://api.openai.com/v1"
//! api_key_env = "OPENAI_API_KEY"
//! priority = 1      # only while every priority-0 endpoint is down or saturated
//! rpm = 500
//! ```

use std::fmt;

use super::origin::Origin;
use super::values::{ProviderSpec, Show};
use super::{Connection, Layers, UsageError};

/// `base_url`: one URL, or several from a repeated `--base-url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrls(pub(crate) Vec<String>);

impl BaseUrls {
    /// The first URL: the one base URL of a client with one endpoint.
    pub(crate) fn first(&self) -> &str {
        self.0
            .first()
            .map_or(volley::transport::DEFAULT_BASE_URL, String::as_str)
    }
}

impl Default for BaseUrls {
    fn default() -> BaseUrls {
        BaseUrls(vec![volley::transport::DEFAULT_BASE_URL.to_owned()])
    }
}

impl From<String> for BaseUrls {
    fn from(url: String) -> BaseUrls {
        BaseUrls(vec![url])
    }
}

impl serde::Serialize for BaseUrls {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => serializer.serialize_str(one),
            many => many.serialize(serializer),
        }
    }
}

impl<'de> serde::Deserialize<'de> for BaseUrls {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<BaseUrls, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(url) => Ok(BaseUrls(vec![url])),
            OneOrMany::Many(urls) if urls.is_empty() => {
                Err(serde::de::Error::custom("base_url: an empty list"))
            }
            OneOrMany::Many(urls) => Ok(BaseUrls(urls)),
        }
    }
}

impl Show for BaseUrls {
    fn show(&self) -> String {
        self.0.iter().map(Show::show).collect::<Vec<_>>().join(", ")
    }
}

/// One `[[profile.NAME.endpoints]]` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndpointSpec {
    /// The base URL, `/v1` included.
    pub(crate) url: String,
    /// Its name in reports and metrics [default: host:port].
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// Its share of traffic within its priority group [default: 1].
    #[serde(default)]
    pub(crate) weight: Option<u32>,
    /// Its fallback group; higher numbers only while lower ones are down [default: 0].
    #[serde(default)]
    pub(crate) priority: Option<u32>,
    /// The variable of its API key [default: the profile's `api_key_env`].
    #[serde(default)]
    pub(crate) api_key_env: Option<String>,
    /// Its provider [default: the profile's].
    #[serde(default)]
    pub(crate) provider: Option<String>,
    /// Its requests per minute [default: the profile's limit, in a limiter of its own].
    #[serde(default)]
    pub(crate) rpm: Option<u32>,
    /// Its tokens per minute [default: as `rpm`].
    #[serde(default)]
    pub(crate) tpm: Option<u64>,
    /// The most requests in flight at it; `concurrency` stays the ceiling over all
    /// [default: none].
    #[serde(default)]
    pub(crate) concurrency: Option<usize>,
}

/// The `endpoints` setting: the tables, in order.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub(crate) struct EndpointSpecs(pub(crate) Vec<EndpointSpec>);

impl Show for EndpointSpecs {
    fn show(&self) -> String {
        if self.0.is_empty() {
            return "none".to_owned();
        }
        self.0
            .iter()
            .map(|e| {
                let mut text = e.url.show();
                if let Some(priority) = e.priority.filter(|p| *p > 0) {
                    text.push_str(&format!(" (priority {priority})"));
                }
                text
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for EndpointSpecs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.show())
    }
}

/// The endpoints of a client with more than one, or `None` for the one base URL.
///
/// # Errors
/// A [`UsageError`] for both lists in one layer, or an endpoint's unknown provider.
pub(crate) fn client_endpoints(
    layers: &Layers,
    connection: &Connection,
) -> Result<Option<Vec<volley::Endpoint>>, UsageError> {
    let tables = &connection.endpoints.0;
    let urls_rank = rank(&layers.origin("base_url"));
    let tables_rank = rank(&layers.origin("endpoints"));
    if tables.is_empty() || urls_rank > tables_rank {
        let urls = &connection.base_url.0;
        if urls.len() < 2 {
            return Ok(None);
        }
        return Ok(Some(urls.iter().map(volley::Endpoint::new).collect()));
    }
    if urls_rank == tables_rank {
        return Err(UsageError(
            "both base_url and endpoints are set in one place: give the URLs as endpoints"
                .to_owned(),
        ));
    }
    let mut endpoints = Vec::with_capacity(tables.len());
    for spec in tables {
        let mut endpoint = volley::Endpoint::new(spec.url.clone());
        if let Some(name) = &spec.name {
            endpoint = endpoint.name(name.clone());
        }
        if let Some(weight) = spec.weight {
            endpoint = endpoint.weight(weight);
        }
        if let Some(priority) = spec.priority {
            endpoint = endpoint.priority(priority);
        }
        if let Some(variable) = &spec.api_key_env {
            endpoint = endpoint.api_key_env(variable.clone());
        }
        if let Some(provider) = &spec.provider {
            let provider: ProviderSpec = provider
                .parse()
                .map_err(|e| UsageError(format!("endpoint {}: provider: {e}", spec.url.show())))?;
            endpoint = endpoint.provider(provider.0);
        }
        if let Some(rpm) = spec.rpm {
            endpoint = endpoint.rpm(rpm);
        }
        if let Some(tpm) = spec.tpm {
            endpoint = endpoint.tpm(tpm);
        }
        if let Some(max) = spec.concurrency {
            endpoint = endpoint.concurrency(max);
        }
        endpoints.push(endpoint);
    }
    Ok(Some(endpoints))
}

/// The URL of the first endpoint table in use that sets its own `rpm` or `tpm`: such a limit
/// lives in this process alone, so a shared limit (`--shared-limit`) cannot cover it.
pub(crate) fn with_own_limit(layers: &Layers, connection: &Connection) -> Option<String> {
    let tables = &connection.endpoints.0;
    if tables.is_empty() || rank(&layers.origin("base_url")) >= rank(&layers.origin("endpoints")) {
        return None;
    }
    tables
        .iter()
        .find(|spec| spec.rpm.is_some() || spec.tpm.is_some())
        .map(|spec| spec.url.show().to_string())
}

/// How strong a layer is: a flag over `VOLLEY_*` over a profile over the ecosystem's
/// variables over defaults.
fn rank(origin: &Origin) -> u8 {
    match origin {
        Origin::Flag => 4,
        Origin::Env => 3,
        Origin::Profile(_) => 2,
        Origin::Ecosystem(_) => 1,
        Origin::Default => 0,
    }
}

/// `builder` with the run's endpoints: several (from a repeated `--base-url` or the
/// profile's tables), or the one `base_url` (the mock's, with `--mock`).
///
/// # Errors
/// As [`client_endpoints`].
pub(crate) fn apply(
    builder: volley::ClientBuilder,
    layers: &Layers,
    connection: &Connection,
    base_url: String,
    mock: bool,
) -> Result<volley::ClientBuilder, UsageError> {
    let endpoints = if mock {
        None
    } else {
        client_endpoints(layers, connection)?
    };
    Ok(match endpoints {
        Some(endpoints) => endpoints
            .into_iter()
            .fold(builder, volley::ClientBuilder::endpoint),
        None => builder.base_url(base_url),
    })
}

/// Each endpoint's counts, one line each, for a run's summary; empty with one endpoint.
pub(crate) fn summary_lines(stats: &[volley::EndpointStats]) -> Vec<String> {
    stats
        .iter()
        .map(|s| {
            let latency = s
                .mean_latency
                .map_or_else(|| "-".to_owned(), |d| format!("{} ms", d.as_millis()));
            format!(
                "  endpoint {}: {} sent, {} answered, {} 429/529, {} 5xx, {} failed; breaker {} \
                 (opened {}×, {} health checks); mean latency {latency}",
                s.name,
                s.requests,
                s.answered,
                s.rate_limited,
                s.server_errors,
                s.failed,
                s.state.as_str(),
                s.breaker_opened,
                s.health_checks,
            )
        })
        .collect()
}
