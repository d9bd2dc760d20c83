//! Provider conventions: how a transport authenticates and what its URLs look like.
//!
//! OpenAI (and compatible servers) take `Authorization: Bearer KEY` under one base URL.
//! Anthropic takes the key as `Authorization: Bearer KEY` or `x-api-key: KEY` with an
//! `anthropic-version` header (see [`AnthropicAuth`](crate::AnthropicAuth)), under
//! `https://api.anthropic.com/v1`.
//! Azure OpenAI, as the official `openai` Python SDK's `AzureOpenAI` client calls it:
//!
//! - the key in an `api-key` header, or a Microsoft Entra ID token as
//!   `Authorization: Bearer TOKEN` (never both);
//! - `api-version=VERSION` added to the query of every request;
//! - a base URL `https://RESOURCE.openai.azure.com/openai/deployments/NAME` (one deployment),
//!   or `…/openai`, under which a request to a deployment endpoint (`/chat/completions`,
//!   `/embeddings`, `/completions`, …) goes to `/deployments/{model}/…`, its JSON body's
//!   `model` naming the deployment; or the v1 API, `…/openai/v1`, which takes the model in the
//!   body as OpenAI does and needs no `api-version`.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use http::uri::PathAndQuery;
use volley_core::{Error, ErrorKind};

/// The environment variable read for the OpenAI key by
/// [`Builder::from_env`](crate::Builder::from_env).
pub const API_KEY_ENV: &str = "OPENAI_API_KEY";
/// The environment variable read for the OpenAI base URL by
/// [`Builder::from_env`](crate::Builder::from_env).
pub const BASE_URL_ENV: &str = "OPENAI_BASE_URL";
/// The Azure OpenAI resource endpoint, read by [`Builder::from_env`](crate::Builder::from_env)
/// with [`Provider::Azure`].
pub const AZURE_ENDPOINT_ENV: &str = "AZURE_OPENAI_ENDPOINT";
/// The Azure OpenAI key, read by [`Builder::from_env`](crate::Builder::from_env) with
/// [`Provider::Azure`].
pub const AZURE_API_KEY_ENV: &str = "AZURE_OPENAI_API_KEY";
/// The Microsoft Entra ID token, read by [`Builder::from_env`](crate::Builder::from_env) with
/// [`Provider::Azure`] (it wins over the key, as in the official SDK).
pub const AZURE_AD_TOKEN_ENV: &str = "AZURE_OPENAI_AD_TOKEN";
/// The Azure OpenAI API version, read by [`Builder::from_env`](crate::Builder::from_env) with
/// [`Provider::Azure`].
pub const API_VERSION_ENV: &str = "OPENAI_API_VERSION";

/// The API conventions a transport speaks: how it sends credentials and shapes its URLs.
///
/// Parsed from `openai`, `azure` or `anthropic` (the CLI's `--provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Provider {
    /// OpenAI and OpenAI-compatible servers: `Authorization: Bearer KEY`.
    #[default]
    OpenAi,
    /// Azure OpenAI: `api-key: KEY` (or an Entra ID bearer token), `api-version` on every
    /// request, deployment URLs. See [`Builder::provider`](crate::Builder::provider).
    Azure,
    /// Anthropic's Messages API: `Authorization: Bearer KEY` (or `x-api-key`) and
    /// `anthropic-version`. See [`Builder::anthropic_auth`](crate::Builder::anthropic_auth).
    Anthropic,
}

impl Provider {
    /// The name the provider is parsed from: `openai`, `azure`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Azure => "azure",
            Provider::Anthropic => "anthropic",
        }
    }

    /// The wire dialect the provider speaks, which layers ask about usage, errors and
    /// rate-limit headers.
    pub fn dialect(self) -> volley_core::Dialect {
        match self {
            Provider::OpenAi | Provider::Azure => volley_core::Dialect::OpenAi,
            Provider::Anthropic => volley_core::Dialect::Anthropic,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = Error;

    fn from_str(s: &str) -> Result<Provider, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai" => Ok(Provider::OpenAi),
            "azure" | "azure-openai" => Ok(Provider::Azure),
            "anthropic" => Ok(Provider::Anthropic),
            other => Err(Error::new(
                ErrorKind::Config,
                format!("unknown provider {other:?}: expected openai, azure or anthropic"),
            )),
        }
    }
}

/// The base URL the official SDK makes of an Azure OpenAI resource endpoint
/// (`https://RESOURCE.openai.azure.com`): `{endpoint}/openai`, or
/// `{endpoint}/openai/deployments/{deployment}`.
pub fn azure_base_url(endpoint: &str, deployment: Option<&str>) -> String {
    let mut url = format!("{}/openai", endpoint.trim().trim_end_matches('/'));
    if let Some(deployment) = deployment {
        url.push_str("/deployments/");
        url.push_str(deployment.trim());
    }
    url
}

/// The endpoints the Azure SDK routes to `/deployments/{model}` under an `…/openai` base URL.
const DEPLOYMENT_ENDPOINTS: [&str; 8] = [
    "/completions",
    "/chat/completions",
    "/embeddings",
    "/audio/transcriptions",
    "/audio/translations",
    "/audio/speech",
    "/images/generations",
    "/images/edits",
];

/// What an Azure base URL asks of each request.
#[derive(Debug, Clone, Default)]
pub(crate) struct AzureShape {
    /// `api-version=…`, appended to every query.
    pub(crate) query: Option<String>,
    /// The base path is `…/openai`: deployment endpoints go to `/deployments/{model}/…`.
    pub(crate) route_by_model: bool,
}

impl AzureShape {
    /// The shape of an Azure base path (`/openai/deployments/x`, `/openai`, `/openai/v1`).
    pub(crate) fn of(base_path: &str, api_version: Option<&str>) -> Result<AzureShape, Error> {
        let v1 = base_path.ends_with("/v1");
        let api_version = api_version.map(str::trim).filter(|v| !v.is_empty());
        if api_version.is_none() && !v1 {
            return Err(Error::new(
                ErrorKind::Config,
                "Azure OpenAI deployment URLs need an API version (--api-version or \
                 OPENAI_API_VERSION, e.g. 2024-10-21); only the v1 API (…/openai/v1) goes \
                 without",
            ));
        }
        let query = api_version
            .map(|v| {
                if v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                {
                    Ok(format!("api-version={v}"))
                } else {
                    Err(Error::new(
                        ErrorKind::Config,
                        format!("the API version {v:?} is not of the form 2024-10-21[-preview]"),
                    ))
                }
            })
            .transpose()?;
        Ok(AzureShape {
            query,
            route_by_model: !v1 && !base_path.contains("/deployments"),
        })
    }

    /// `path` (the request's, before the base path is joined) with `/deployments/{model}` in
    /// front when the base URL routes by model and the body names one.
    pub(crate) fn deployment_prefix(&self, path: &str, body: &Bytes) -> Option<String> {
        if !self.route_by_model || !DEPLOYMENT_ENDPOINTS.contains(&path) {
            return None;
        }
        #[derive(serde::Deserialize)]
        struct Model<'a> {
            #[serde(borrow)]
            model: Option<std::borrow::Cow<'a, str>>,
        }
        // Only the top-level `model` is read; every other field is skipped unparsed.
        let model = serde_json::from_slice::<Model<'_>>(body).ok()?.model?;
        let mut prefix = String::with_capacity(13 + model.len());
        prefix.push_str("/deployments/");
        encode_segment(&model, &mut prefix);
        Some(prefix)
    }

    /// `path_and_query` with `api-version` added to its query (unless the caller set it).
    pub(crate) fn with_query(&self, path_and_query: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        if let Some((_, q)) = path_and_query.split_once('?')
            && q.split('&').any(|pair| pair.starts_with("api-version="))
        {
            return None;
        }
        let sep = if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        Some(format!("{path_and_query}{sep}{query}"))
    }
}

/// Percent-encodes one path segment (everything but RFC 3986's unreserved characters).
fn encode_segment(segment: &str, out: &mut String) {
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Joins `prefix` (the base path, maybe a deployment) and the request's path and query, with
/// `api-version` added.
pub(crate) fn azure_path(
    shape: &AzureShape,
    base_path: &str,
    request: &PathAndQuery,
    body: &Bytes,
) -> Result<PathAndQuery, Error> {
    let deployment = shape.deployment_prefix(request.path(), body);
    let mut joined = String::with_capacity(base_path.len() + request.as_str().len() + 48);
    joined.push_str(base_path);
    if let Some(deployment) = &deployment {
        joined.push_str(deployment);
    }
    joined.push_str(request.as_str());
    if let Some(with_query) = shape.with_query(&joined) {
        joined = with_query;
    }
    PathAndQuery::from_maybe_shared(Bytes::from(joined)).map_err(|e| {
        Error::new(ErrorKind::InvalidInput, "the joined URL is invalid").with_source(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(base: &str, version: Option<&str>, path: &'static str, body: &str) -> String {
        let shape = AzureShape::of(base, version).unwrap();
        azure_path(
            &shape,
            base,
            &PathAndQuery::from_static(path),
            &Bytes::copy_from_slice(body.as_bytes()),
        )
        .unwrap()
        .to_string()
    }

    #[test]
    fn azure_url_shapes_follow_the_sdk() {
        let chat =
            r#"{"messages":[{"role":"user","content":"\"model\": no"}],"model":"gpt 4o/mini"}"#;
        // One deployment in the base URL: the body's model is not used for routing.
        assert_eq!(
            joined(
                "/openai/deployments/prod",
                Some("2024-10-21"),
                "/chat/completions",
                chat
            ),
            "/openai/deployments/prod/chat/completions?api-version=2024-10-21"
        );
        // `…/openai`: the model names the deployment, encoded as one path segment.
        assert_eq!(
            joined("/openai", Some("2024-10-21"), "/chat/completions", chat),
            "/openai/deployments/gpt%204o%2Fmini/chat/completions?api-version=2024-10-21"
        );
        // Not a deployment endpoint: no routing.
        assert_eq!(
            joined("/openai", Some("2024-10-21"), "/models", ""),
            "/openai/models?api-version=2024-10-21"
        );
        // The v1 API: the model stays in the body, the version is optional.
        assert_eq!(
            joined("/openai/v1", None, "/chat/completions", chat),
            "/openai/v1/chat/completions"
        );
        assert_eq!(
            joined("/openai/v1", Some("preview"), "/chat/completions?x=1", chat),
            "/openai/v1/chat/completions?x=1&api-version=preview"
        );
        // A version the caller set is kept.
        assert_eq!(
            joined(
                "/openai/deployments/d",
                Some("2024-10-21"),
                "/embeddings?api-version=x",
                "{}"
            ),
            "/openai/deployments/d/embeddings?api-version=x"
        );
    }

    #[test]
    fn deployment_urls_need_a_version() {
        let err = AzureShape::of("/openai/deployments/d", None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("OPENAI_API_VERSION"), "{err}");
        assert!(AzureShape::of("/openai", Some("2024-10-21&x=1")).is_err());
    }

    #[test]
    fn providers_parse() {
        assert_eq!("Azure".parse::<Provider>().unwrap(), Provider::Azure);
        assert_eq!("openai".parse::<Provider>().unwrap(), Provider::OpenAi);
        assert_eq!(
            "Anthropic".parse::<Provider>().unwrap(),
            Provider::Anthropic
        );
        assert_eq!(
            Provider::Anthropic.dialect(),
            volley_core::Dialect::Anthropic
        );
        assert_eq!(Provider::Azure.dialect(), volley_core::Dialect::OpenAi);
        assert!("gemini".parse::<Provider>().is_err());
        assert_eq!(Provider::Azure.to_string(), "azure");
    }
}
