//! The state every connection of one server shares: the configuration, the counters, the
//! rate limiter, the journal and response parts computed once at start-up. Its own file
//! because the service, the response bodies and the server all hold it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::MockConfig;
use crate::config::retry_after_values;
use crate::openai::{self, Filler};
use crate::rate_limit::Limiter;
use crate::stats::{Counters, InFlight};

/// The header whose value the journal records.
const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-client-request-id");

/// What every connection of one server shares: the configuration, the counters, and response
/// parts computed once at start-up.
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) counters: Counters,
    pub(crate) filler: Filler,
    /// The provider-style rate limiter, when [`MockConfig::rate_limits`] sets one.
    pub(crate) limiter: Option<Limiter>,
    /// The request journal, when [`MockConfig::journal`] asks for one. Off by default, so the
    /// hot path pays one branch and no lock.
    pub(crate) journal: Option<Mutex<Journal>>,
    pub(crate) rate_limit_body: Bytes,
    pub(crate) server_error_body: Bytes,
    pub(crate) unavailable_body: Bytes,
    pub(crate) retry_after: (HeaderValue, HeaderValue),
    pub(crate) unavailable_retry_after: Option<(HeaderValue, HeaderValue)>,
}

impl AsRef<Counters> for Arc<Shared> {
    fn as_ref(&self) -> &Counters {
        &self.counters
    }
}

/// The `x-client-request-id`s of the API requests: as they arrive, and as their successful
/// answers are complete.
#[derive(Default)]
pub(crate) struct Journal {
    arrived: Vec<String>,
    answered: Vec<String>,
}

/// A request in flight, holding the server's shared state.
pub(crate) type Guard = InFlight<Arc<Shared>>;

impl Shared {
    pub(crate) fn new(config: MockConfig) -> Self {
        let headers = |wait: Duration| {
            let (secs, millis) = retry_after_values(wait);
            // Decimal digits are always a valid header value.
            (
                HeaderValue::try_from(secs).expect("digits are a valid header value"),
                HeaderValue::try_from(millis).expect("digits are a valid header value"),
            )
        };
        let (retry_secs, _) = retry_after_values(config.retry_after);
        let rate_limit_body = openai::error_body(
            &format!("Rate limit reached for requests (mock). Please try again in {retry_secs}s."),
            "requests",
            None,
            Some("rate_limit_exceeded"),
        );
        Self {
            filler: Filler::new(config.output_tokens.max()),
            counters: Counters::new(),
            limiter: Limiter::new(&config.rate_limits, tokio::time::Instant::now()),
            journal: config.journal.then(Mutex::default),
            rate_limit_body: rate_limit_body.into(),
            server_error_body: openai::error_body(
                "The server had an error while processing your request. Sorry about that! (mock)",
                "server_error",
                None,
                None,
            )
            .into(),
            unavailable_body: openai::error_body(
                "The server is overloaded or not ready yet. (mock)",
                "server_error",
                None,
                None,
            )
            .into(),
            retry_after: headers(config.retry_after),
            unavailable_retry_after: config.unavailable_retry_after.map(headers),
            config,
        }
    }

    /// Starts a new statistics window and clears the journal; returns the old window's stats.
    pub(crate) fn reset(&self) -> crate::Stats {
        if let Some(journal) = &self.journal {
            *journal.lock().unwrap_or_else(PoisonError::into_inner) = Journal::default();
        }
        self.counters.reset()
    }

    /// A copy of the journal's arrivals: empty when it is off.
    pub(crate) fn journal(&self) -> Vec<String> {
        self.with_journal(|journal| journal.arrived.clone())
    }

    /// A copy of the journal's completed successful answers: empty when it is off.
    pub(crate) fn answered(&self) -> Vec<String> {
        self.with_journal(|journal| journal.answered.clone())
    }

    /// Appends the request's `x-client-request-id` to the journal, when it is on, and returns
    /// it for [`answer`](Self::answer).
    pub(crate) fn record(&self, headers: &HeaderMap) -> Option<Box<str>> {
        let journal = self.journal.as_ref()?;
        let id = headers
            .get(CLIENT_REQUEST_ID)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        // Held for one push, never across an await.
        journal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .arrived
            .push(id.clone());
        Some(id.into_boxed_str())
    }

    /// Notes that the successful answer to the request `id` was completely handed to the
    /// connection (its last byte is written next, before the client can see it).
    pub(crate) fn answer(&self, id: Box<str>) {
        if let Some(journal) = &self.journal {
            journal
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .answered
                .push(id.into_string());
        }
    }

    fn with_journal(&self, read: impl FnOnce(&Journal) -> Vec<String>) -> Vec<String> {
        self.journal.as_ref().map_or_else(Vec::new, |journal| {
            read(&journal.lock().unwrap_or_else(PoisonError::into_inner))
        })
    }

    /// Whether the request may use the API: always, unless a key is required.
    /// The key a refused request presented (`api-key`, `x-api-key`, or the bearer token), for
    /// the `401` to quote as OpenAI's does; empty when it presented none.
    pub(crate) fn presented_key(headers: &HeaderMap) -> String {
        let value = ["api-key", "x-api-key"]
            .into_iter()
            .find_map(|name| headers.get(name))
            .map(HeaderValue::as_bytes)
            .or_else(|| {
                let value = headers.get(AUTHORIZATION)?.as_bytes();
                let space = value.iter().position(|&b| b == b' ')?;
                Some(value[space + 1..].trim_ascii())
            })
            .unwrap_or_default();
        String::from_utf8_lossy(value).into_owned()
    }

    /// Whether the request to `path` carries the required key: as a bearer token anywhere,
    /// as `api-key` only on Azure's paths (`/openai/…`) and as `x-api-key` only on the paths
    /// Anthropic serves (`/v1/messages…`, `/v1/models…`), as each provider takes it; OpenAI
    /// refuses a key in either of those headers.
    pub(crate) fn authorized(&self, headers: &HeaderMap, path: &str) -> bool {
        let Some(key) = &self.config.require_api_key else {
            return true;
        };
        let header = if path.starts_with("/openai/") {
            Some("api-key")
        } else if ["/messages", "/models"]
            .iter()
            .any(|prefix| crate::azure::api_path(path).starts_with(prefix))
        {
            Some("x-api-key")
        } else {
            None
        };
        if header.is_some_and(|name| {
            headers
                .get(name)
                .is_some_and(|v| v.as_bytes() == key.as_bytes())
        }) {
            return true;
        }
        let Some(value) = headers.get(AUTHORIZATION) else {
            return false;
        };
        let value = value.as_bytes();
        match value.iter().position(|&b| b == b' ') {
            Some(space) => {
                value[..space].eq_ignore_ascii_case(b"bearer")
                    && value[space + 1..].trim_ascii() == key.as_bytes()
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_records_ids_in_order_and_clears_on_reset() {
        let off = Shared::new(MockConfig::default());
        assert_eq!(off.record(&HeaderMap::new()), None);
        assert!(off.journal.is_none());
        assert!(off.journal().is_empty());

        let shared = Shared::new(MockConfig {
            journal: true,
            ..MockConfig::default()
        });
        let with = |id: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(id) = id {
                h.insert(CLIENT_REQUEST_ID, HeaderValue::from_str(id).unwrap());
            }
            h
        };
        let b = shared.record(&with(Some("b"))).unwrap();
        shared.record(&with(Some("a")));
        shared.record(&with(None));
        assert_eq!(shared.journal(), ["b", "a", ""]);
        assert!(shared.answered().is_empty());
        shared.answer(b);
        assert_eq!(shared.answered(), ["b"]);
        shared.reset();
        assert!(shared.journal().is_empty());
        assert!(shared.answered().is_empty());
    }

    #[test]
    fn authorization_needs_the_exact_bearer_key() {
        let shared = Shared::new(MockConfig {
            require_api_key: Some("sk-good".into()),
            ..MockConfig::default()
        });
        let chat = "/v1/chat/completions";
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            shared.authorized(&h, chat)
        };
        assert!(with("Bearer sk-good"));
        assert!(with("bearer sk-good"));
        assert!(!with("Bearer sk-bad"));
        assert!(!with("Bearer sk-good2"));
        assert!(!with("Basic sk-good"));
        assert!(!with("sk-good"));
        assert!(!shared.authorized(&HeaderMap::new(), chat));
        let open = Shared::new(MockConfig::default());
        assert!(open.authorized(&HeaderMap::new(), chat));
        // Each provider's own header, on its own paths only.
        let header = |name: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("sk-good"));
            h
        };
        assert!(shared.authorized(&header("api-key"), "/openai/deployments/d/chat/completions"));
        assert!(shared.authorized(&header("x-api-key"), "/v1/messages"));
        assert!(shared.authorized(&header("x-api-key"), "/v1/models"));
        assert!(!shared.authorized(&header("x-api-key"), chat));
        assert!(!shared.authorized(&header("api-key"), chat));
        assert!(!shared.authorized(&header("api-key"), "/v1/messages"));
    }
}
