//! Limits learned per model: a [`LocalLimiter`] whose [`Limits::learns_per_model`] keeps one
//! limiter per model named in the request bodies, each learning (with its own slow start) and
//! enforcing that model's limits. The limiter itself serves requests that name no model.

use std::collections::HashMap;
#[cfg(test)]
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};

use volley_core::Request;

use super::{Limits, LocalLimiter};

/// The limiters of the models seen so far.
pub(super) struct Models {
    /// What each model's limiter enforces: the root's limits, not per model again.
    limits: Limits,
    map: Mutex<HashMap<Box<str>, LocalLimiter>>,
}

impl Models {
    pub(super) fn new(limits: &Limits) -> Models {
        Models {
            limits: limits.clone().learn_per_model(false),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The limiter of `model`, made on first use.
    fn limiter(&self, model: &str) -> Option<LocalLimiter> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(limiter) = map.get(model) {
            return Some(limiter.clone());
        }
        // The root was built from the same limits, so they are valid; should that ever change,
        // the root serves the model instead of failing the request.
        let limiter = LocalLimiter::new(self.limits.clone()).ok()?;
        map.insert(model.into(), limiter.clone());
        Some(limiter)
    }

    /// `f` of every model's limiter, under the map's lock (nothing is copied: it runs on
    /// every request of the facade).
    pub(super) fn with_each<R>(
        &self,
        f: impl FnOnce(std::collections::hash_map::Values<'_, Box<str>, LocalLimiter>) -> R,
    ) -> R {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        f(map.values())
    }
}

impl LocalLimiter {
    /// The limiter of requests for `model`: with [`Limits::learns_per_model`], that model's own
    /// (shared by every clone of this limiter), otherwise this one. An empty name is this one.
    pub fn for_model(&self, model: &str) -> LocalLimiter {
        match &self.shared.models {
            Some(models) if !model.is_empty() => {
                models.limiter(model).unwrap_or_else(|| self.clone())
            }
            _ => self.clone(),
        }
    }

    /// [`for_model`](Self::for_model) of the model `request` names in its body (read only when
    /// limits are learned per model).
    pub(super) fn for_request_model(&self, request: &Request) -> LocalLimiter {
        if self.shared.models.is_none() {
            return self.clone();
        }
        match leading_model(request.body()) {
            Some(model) => self.for_model(model),
            None => {
                let facts = request.dialect().request_facts(request.body());
                self.for_model(facts.model.as_deref().unwrap_or_default())
            }
        }
    }
}

/// The model of a JSON body that names it first (`{"model":"gpt-4o", …`, as serde writes the
/// facade's requests and as most batch files have it), read without parsing the rest: a
/// prompt of 100 KB is not scanned for every request. `None` when the body does not start so
/// (or the name has an escape); the caller then parses the body.
fn leading_model(body: &[u8]) -> Option<&str> {
    let skip_ws = |s: &[u8]| -> usize {
        s.iter()
            .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .unwrap_or(s.len())
    };
    let mut at = skip_ws(body);
    let rest = body.get(at..)?.strip_prefix(b"{")?;
    at = skip_ws(rest);
    let rest = rest.get(at..)?.strip_prefix(b"\"model\"")?;
    at = skip_ws(rest);
    let rest = rest.get(at..)?.strip_prefix(b":")?;
    at = skip_ws(rest);
    let rest = rest.get(at..)?.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    if rest[end] != b'"' {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};
    use tower::ServiceExt as _;
    use volley_core::{Body, Error, Response, Timings};

    use super::*;
    use crate::rate_limit::{Observation, RateLimitLayer, RateLimiter};

    /// An answer stating `rpm` requests a minute.
    fn limit(rpm: u64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-limit-requests", rpm.into());
        headers
    }

    fn chat(model: &str) -> Request {
        let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
        Request::post("/chat/completions", body).unwrap()
    }

    #[test]
    fn a_leading_model_is_read_without_parsing_the_rest() {
        for (body, model) in [
            (r#"{"model":"gpt-4o","messages":[]}"#, Some("gpt-4o")),
            (
                " {\n  \"model\" : \"claude-x\", \"max_tokens\": 5}",
                Some("claude-x"),
            ),
            (r#"{"model":"","messages":[]}"#, Some("")),
            // Not first, escaped, or not a string: the body is parsed instead.
            (r#"{"messages":[],"model":"gpt-4o"}"#, None),
            (r#"{"model":"a\"b"}"#, None),
            (r#"{"model":7}"#, None),
            (r#"{"model":"unterminated"#, None),
            ("", None),
        ] {
            assert_eq!(leading_model(body.as_bytes()), model, "{body}");
        }
        // Either way the same limiter: the parse finds what the fast path would.
        let limiter = LocalLimiter::new(Limits::auto()).unwrap();
        let late = Request::post("/chat/completions", r#"{"messages":[],"model":"m1"}"#).unwrap();
        assert!(Arc::ptr_eq(
            &limiter.for_request(&late).shared,
            &limiter.for_model("m1").shared
        ));
        assert!(Arc::ptr_eq(
            &limiter.for_request(&chat("m1")).shared,
            &limiter.for_model("m1").shared
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn each_model_learns_its_own_limit_through_the_layer() {
        // The provider limits gpt-4o-mini to 600 a minute and gpt-4o to 60.
        let provider = tower::service_fn(|request: Request| async move {
            let body = std::str::from_utf8(request.body()).unwrap().to_owned();
            let rpm = if body.contains("gpt-4o-mini") {
                600
            } else {
                60
            };
            Ok::<_, Error>(Response::new(
                StatusCode::OK,
                limit(rpm),
                Body::Full(Bytes::from_static(b"{}")),
                Timings::start(),
                request.id(),
            ))
        });
        let layer = RateLimitLayer::new(Limits::auto()).unwrap();
        let root = layer.limiter().clone();
        let svc = tower::Layer::layer(&layer, provider);
        for model in ["gpt-4o-mini", "gpt-4o"] {
            svc.clone().oneshot(chat(model)).await.unwrap();
        }
        assert_eq!(root.for_model("gpt-4o-mini").learned(), (Some(600), None));
        assert_eq!(root.for_model("gpt-4o").learned(), (Some(60), None));
        // The tightest, for a summary.
        assert_eq!(root.learned(), (Some(60), None));
        // Each is paced by its own: gpt-4o-mini (ten a second, burst 10) sends five at once,
        // gpt-4o (one a second, burst 1) one, and the next a second later.
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            svc.clone().oneshot(chat("gpt-4o-mini")).await.unwrap();
        }
        svc.clone().oneshot(chat("gpt-4o")).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        svc.clone().oneshot(chat("gpt-4o")).await.unwrap();
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(900), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_given_limit_is_the_keys_not_each_models() {
        let limiter = LocalLimiter::new(Limits::auto().requests(600)).unwrap();
        assert!(!limiter.limits().learns_per_model());
        let model = limiter.for_model("gpt-4o");
        model.observe(&Observation::from_headers(&limit(60)));
        // The same limiter: what one model's answer teaches, every model uses.
        assert!(Arc::ptr_eq(&model.shared, &limiter.shared));
        assert!(limiter.for_request(&chat("gpt-4o-mini")).learns());
        // Per model: a request naming no model is served by the root itself.
        let per_model = LocalLimiter::new(Limits::auto()).unwrap();
        let unnamed = Request::post("/embeddings", "{}").unwrap();
        assert!(Arc::ptr_eq(
            &per_model.for_request(&unnamed).shared,
            &per_model.shared
        ));
        assert!(!Arc::ptr_eq(
            &per_model.for_model("m").shared,
            &per_model.shared
        ));
    }
}
