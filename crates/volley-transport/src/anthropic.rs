//! Anthropic's conventions: how the key is sent, and the version and beta headers.
//!
//! The official Python SDK (2.x) sends the key as `Authorization: Bearer KEY` with
//! `anthropic-version: 2026-10-21`; older SDKs send `x-api-key: KEY` with
//! `anthropic-version: 2023-06-01`, which the API still takes. Both are offered, the current
//! SDK's by default.

use std::fmt;
use std::str::FromStr;

use http::HeaderValue;
use http::header::{HeaderMap, HeaderName};
use volley_core::anthropic::{API_VERSION, BETA_HEADER, LEGACY_API_VERSION, VERSION_HEADER};
use volley_core::{Error, ErrorKind};

/// How an Anthropic key is sent. Parsed from `bearer` or `x-api-key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum AnthropicAuth {
    /// `Authorization: Bearer KEY`, as the current official SDK sends it (and as it sends an
    /// `ANTHROPIC_AUTH_TOKEN`); default version `2026-10-21`.
    #[default]
    Bearer,
    /// `x-api-key: KEY`, as older SDKs send it; default version `2023-06-01`.
    XApiKey,
}

impl AnthropicAuth {
    /// The `anthropic-version` sent with this kind of auth unless one is set.
    pub fn default_version(self) -> &'static str {
        match self {
            AnthropicAuth::Bearer => API_VERSION,
            AnthropicAuth::XApiKey => LEGACY_API_VERSION,
        }
    }

    /// The name it is parsed from: `bearer`, `x-api-key`.
    pub fn as_str(self) -> &'static str {
        match self {
            AnthropicAuth::Bearer => "bearer",
            AnthropicAuth::XApiKey => "x-api-key",
        }
    }
}

impl fmt::Display for AnthropicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AnthropicAuth {
    type Err = Error;

    fn from_str(s: &str) -> Result<AnthropicAuth, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bearer" | "authorization" => Ok(AnthropicAuth::Bearer),
            "x-api-key" | "api-key" => Ok(AnthropicAuth::XApiKey),
            other => Err(Error::new(
                ErrorKind::Config,
                format!("unknown Anthropic auth {other:?}: expected bearer or x-api-key"),
            )),
        }
    }
}

/// Adds `anthropic-version` (unless the default headers carry one) and `anthropic-beta`.
pub(crate) fn version_headers(
    headers: &mut HeaderMap,
    auth: AnthropicAuth,
    version: Option<&str>,
    beta: Option<&str>,
) -> Result<(), Error> {
    let value = |what: &str, text: &str| {
        HeaderValue::from_str(text.trim()).map_err(|_| {
            Error::new(
                ErrorKind::Config,
                format!("the {what} {text:?} cannot be sent as an HTTP header"),
            )
        })
    };
    let version_header = HeaderName::from_static(VERSION_HEADER);
    if let Some(version) = version.map(str::trim).filter(|v| !v.is_empty()) {
        headers.insert(version_header, value("Anthropic version", version)?);
    } else if !headers.contains_key(&version_header) {
        headers.insert(
            version_header,
            HeaderValue::from_static(auth.default_version()),
        );
    }
    if let Some(beta) = beta.map(str::trim).filter(|b| !b.is_empty()) {
        headers.insert(
            HeaderName::from_static(BETA_HEADER),
            value("Anthropic beta", beta)?,
        );
    }
    Ok(())
}
