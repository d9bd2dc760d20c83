//! Azure OpenAI's URL shapes, so the mock answers Azure clients as well:
//! `/openai/deployments/{name}/chat/completions?api-version=…` (the version is required, as
//! Azure requires it: without it the answer is a 404) and the v1 API, `/openai/v1/…`. The key
//! may come as `api-key` instead of a bearer token (see `Shared::authorized`).

use http::Uri;

/// The OpenAI path a request's path stands for: `/chat/completions` for
/// `/v1/chat/completions`, `/openai/v1/chat/completions` and
/// `/openai/deployments/NAME/chat/completions`; the path itself otherwise.
pub(crate) fn api_path(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/openai/deployments/") {
        return rest.find('/').map_or(path, |at| &rest[at..]);
    }
    for prefix in ["/openai/v1", "/v1"] {
        if let Some(rest) = path.strip_prefix(prefix).filter(|r| r.starts_with('/')) {
            return rest;
        }
    }
    path
}

/// Whether a request to an Azure deployment lacks its `api-version` query parameter.
pub(crate) fn lacks_api_version(uri: &Uri) -> bool {
    uri.path().starts_with("/openai/deployments/")
        && !uri.query().is_some_and(|q| {
            q.split('&').any(|pair| {
                pair.strip_prefix("api-version=")
                    .is_some_and(|v| !v.is_empty())
            })
        })
}

/// The first Azure OpenAI API version that accepts `stream_options`. Older ones answer a
/// request that has it with a 400, "Unrecognized request argument supplied: stream_options".
pub(crate) const STREAM_OPTIONS_SINCE: &str = "2024-09-01";

/// Whether a request to an Azure deployment names an `api-version` older than
/// [`STREAM_OPTIONS_SINCE`] (a dated one: `2024-06-01`, `2024-08-01-preview`).
pub(crate) fn refuses_stream_options(uri: &Uri) -> bool {
    if !uri.path().starts_with("/openai/deployments/") {
        return false;
    }
    let version = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("api-version="))
    });
    version.is_some_and(|v| {
        let date = v.get(..10).unwrap_or(v);
        date.len() == 10
            && date.bytes().all(|b| b.is_ascii_digit() || b == b'-')
            && date < STREAM_OPTIONS_SINCE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_paths_map_to_openai_paths() {
        assert_eq!(
            api_path("/openai/deployments/gpt-4o/chat/completions"),
            "/chat/completions"
        );
        assert_eq!(api_path("/openai/v1/embeddings"), "/embeddings");
        assert_eq!(api_path("/v1/models"), "/models");
        assert_eq!(api_path("/openai/deployments/x"), "/openai/deployments/x");
        assert!(lacks_api_version(&Uri::from_static(
            "/openai/deployments/d/chat/completions?x=1"
        )));
        assert!(!lacks_api_version(&Uri::from_static(
            "/openai/deployments/d/chat/completions?api-version=2024-10-21"
        )));
        assert!(!lacks_api_version(&Uri::from_static(
            "/openai/v1/chat/completions"
        )));
    }

    #[test]
    fn api_versions_before_september_2024_refuse_stream_options() {
        let refuses = |uri: &'static str| refuses_stream_options(&Uri::from_static(uri));
        assert!(refuses(
            "/openai/deployments/d/chat/completions?api-version=2024-06-01"
        ));
        assert!(refuses(
            "/openai/deployments/d/chat/completions?x=1&api-version=2024-08-01-preview"
        ));
        assert!(!refuses(
            "/openai/deployments/d/chat/completions?api-version=2024-09-01-preview"
        ));
        assert!(!refuses(
            "/openai/deployments/d/chat/completions?api-version=2024-10-21"
        ));
        assert!(!refuses("/openai/v1/chat/completions?api-version=preview"));
        assert!(!refuses("/v1/chat/completions?api-version=2023-05-15"));
    }
}
