//! The connection settings on a client: the provider's conventions and credential (the key,
//! or for Azure OpenAI an Entra ID token), the proxy and TLS trust. Every command that calls
//! an API goes through here, so each reads them the same way.

use volley::{ClientBuilder, Provider};

use super::origin::Origin;
use super::{Connection, Layers, UsageError, read_key};

/// What a command calls with, besides the base URL.
pub(crate) enum Credential {
    /// An API key (for Azure OpenAI, sent as `api-key`).
    Key(String),
    /// A Microsoft Entra ID token for Azure OpenAI.
    AzureAdToken(String),
    /// None: no key is set and the server is on this machine (vLLM, llama.cpp, Ollama and
    /// LM Studio take requests without one). `read`: the variables that were read for one.
    None { read: String },
}

/// Where a command that calls a real API (not the mock) sends its requests, and with what.
pub(crate) struct Endpoint {
    pub(crate) base_url: String,
    pub(crate) credential: Credential,
}

/// The base URL and credential `connection` says, as the official SDKs read them: for
/// OpenAI the key from `api_key_env`; for Azure OpenAI the base URL from `base_url` or else
/// `azure_endpoint` (`{endpoint}/openai`), and `AZURE_OPENAI_AD_TOKEN` or else
/// `AZURE_OPENAI_API_KEY` unless `api_key_env` names another variable.
///
/// No key is fine when the base URL is on this machine (a local vLLM or llama.cpp takes
/// requests without one): the credential is then [`Credential::None`].
///
/// # Errors
/// A [`UsageError`] when no key is set for a server elsewhere, or Azure has neither a base
/// URL nor an endpoint.
pub(crate) fn endpoint(layers: &Layers, connection: &Connection) -> Result<Endpoint, UsageError> {
    if connection.provider.0 != Provider::Azure {
        let base_url = connection.base_url.first().to_owned();
        let key = match connection.provider.0 {
            Provider::Anthropic => anthropic_key(layers, connection),
            _ => read_key(&connection.api_key_env),
        };
        // A local server needs no key: a missing one is no mistake when every URL is on this
        // machine and no variable was named for it (one named and unset is a mistake).
        let keyless = layers.origin("api_key_env") == Origin::Default
            && connection.base_url.0.iter().all(|url| on_this_machine(url));
        let credential = match key {
            Ok(key) => Credential::Key(key),
            Err(_) if keyless => Credential::None {
                read: match connection.provider.0 {
                    Provider::Anthropic => volley::anthropic::KEY_VARIABLES.join(" or "),
                    _ => connection.api_key_env.clone(),
                },
            },
            Err(e) => return Err(e),
        };
        return Ok(Endpoint {
            base_url,
            credential,
        });
    }
    // Volley's own settings (flag, VOLLEY_*, profile) win over the ecosystem's variables;
    // OPENAI_BASE_URL is OpenAI's, not Azure's.
    let own = |key: &str| {
        matches!(
            layers.origin(key),
            Origin::Flag | Origin::Env | Origin::Profile(_)
        )
    };
    let base_url = match &connection.azure_endpoint {
        Some(_) if own("base_url") && own("azure_endpoint") => {
            return Err(UsageError(
                "both a base URL and an Azure endpoint are set: give one of them".to_owned(),
            ));
        }
        _ if own("base_url") => connection.base_url.first().to_owned(),
        Some(endpoint) => volley::transport::azure_base_url(endpoint, None),
        None => {
            return Err(UsageError(
                "--provider azure needs the resource's endpoint: set AZURE_OPENAI_ENDPOINT or \
                 --azure-endpoint https://RESOURCE.openai.azure.com, or a --base-url such as \
                 https://RESOURCE.openai.azure.com/openai/deployments/NAME"
                    .to_owned(),
            ));
        }
    };
    let credential = if own("api_key_env") {
        Credential::Key(read_key(&connection.api_key_env)?)
    } else if let Ok(token) = read_key(volley::AZURE_AD_TOKEN_ENV) {
        Credential::AzureAdToken(token)
    } else {
        let key = read_key(volley::AZURE_API_KEY_ENV).map_err(|_| {
            UsageError(format!(
                "no Azure OpenAI credential: set {} (or a Microsoft Entra ID token in {}), or \
                 name another variable with --api-key-env",
                volley::AZURE_API_KEY_ENV,
                volley::AZURE_AD_TOKEN_ENV
            ))
        })?;
        Credential::Key(key)
    };
    Ok(Endpoint {
        base_url,
        credential,
    })
}

impl Endpoint {
    /// What a command says once when it calls without a key ([`Credential::None`]), so that
    /// a local server that wants one after all (a 401) is understood.
    pub(crate) fn keyless_note(&self) -> Option<String> {
        match &self.credential {
            Credential::None { read } => Some(format!(
                "no API key is set ({read}); calling the server on this machine without one"
            )),
            _ => None,
        }
    }
}

/// Whether `base_url`'s host is loopback (`localhost`, `127.0.0.0/8`, `::1`).
fn on_this_machine(base_url: &str) -> bool {
    volley::core::host::url_host(base_url).is_some_and(volley::core::host::is_loopback)
}

/// The Anthropic key, as the official SDK reads it: `ANTHROPIC_API_KEY`, then
/// `ANTHROPIC_AUTH_TOKEN` (both sent as `--anthropic-auth` says), unless `api_key_env` names
/// another variable.
fn anthropic_key(layers: &Layers, connection: &Connection) -> Result<String, UsageError> {
    if layers.origin("api_key_env") != Origin::Default {
        return read_key(&connection.api_key_env);
    }
    let [key, token] = volley::anthropic::KEY_VARIABLES;
    read_key(key).or_else(|_| read_key(token)).map_err(|_| {
        UsageError(format!(
            "no API key: set {key} (or {token}), name another variable with --api-key-env, or \
             use --mock"
        ))
    })
}

/// `builder` with the credential.
pub(crate) fn with_credential(builder: ClientBuilder, credential: Credential) -> ClientBuilder {
    match credential {
        Credential::Key(key) => builder.api_key(key),
        Credential::AzureAdToken(token) => builder.azure_ad_token(token),
        Credential::None { .. } => builder,
    }
}

/// `builder` with the provider's conventions, the proxy and TLS trust of `connection`. The
/// in-process mock (`mock`) is reached directly, in plain text, with OpenAI's conventions,
/// or Anthropic's with `--provider anthropic` (the mock speaks both).
///
/// # Errors
/// A [`UsageError`] for a client certificate without its key, or a key without its
/// certificate.
pub(crate) fn apply(
    mut builder: ClientBuilder,
    connection: &Connection,
    mock: bool,
) -> Result<ClientBuilder, UsageError> {
    if connection.provider.0 == Provider::Anthropic {
        builder = builder
            .provider(Provider::Anthropic)
            .anthropic_auth(connection.anthropic_auth.0);
        if let Some(version) = &connection.anthropic_version {
            builder = builder.anthropic_version(version);
        }
        if let Some(features) = &connection.anthropic_beta {
            builder = builder.anthropic_beta(features);
        }
    }
    if mock {
        return Ok(builder.proxy(""));
    }
    builder = builder.provider(connection.provider.0);
    if let Some(version) = &connection.api_version {
        builder = builder.api_version(version);
    }
    if let Some(proxy) = &connection.proxy {
        builder = builder.proxy(proxy);
    }
    if let Some(hosts) = &connection.no_proxy {
        builder = builder.no_proxy(hosts);
    }
    if let Some(ca) = &connection.ca_cert {
        builder = builder.tls_ca_file(ca);
    }
    if connection.native_roots {
        builder = builder.tls_native_roots(true);
    }
    match (&connection.client_cert, &connection.client_key) {
        (Some(cert), Some(key)) => builder = builder.tls_client_identity_files(cert, key),
        (None, None) => {}
        _ => {
            return Err(UsageError(
                "--client-cert and --client-key go together: give both".to_owned(),
            ));
        }
    }
    Ok(builder)
}
