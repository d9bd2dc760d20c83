//! Cache keys: which responses may be served for which requests, and to whom.
//!
//! A [`CacheKey`] is a BLAKE3 hash of everything that decides what an LLM API answers:
//!
//! - the HTTP method;
//! - the path and query (`/chat/completions`);
//! - the body, as canonical JSON when it parses as JSON (object keys sorted, no white space),
//!   so two bodies that differ only in key order or formatting share a key; any other body is
//!   hashed byte for byte;
//! - the [`CredentialId`] of the API key the request is sent with, so two keys never share an
//!   entry, and a client without a key has a namespace of its own;
//! - every credential-like header the request carries itself
//!   ([`CREDENTIAL_HEADERS`](crate::headers::CREDENTIAL_HEADERS): `Authorization`, `api-key`,
//!   `OpenAI-Organization`, `Cookie`, ...; any other named like a credential, as a gateway's
//!   `helicone-auth`, or with a value marked sensitive:
//!   [`is_other_credential`](crate::headers::is_other_credential)), hashed: the transport
//!   sends a request's own `Authorization` instead of the client's key, so a gateway that
//!   serves many tenants with one client (`request.with_header(AUTHORIZATION, tenant_key)`)
//!   gets one namespace per tenant.
//!
//! The model, `temperature`, `seed`, `max_tokens`, the messages and every other parameter are
//! in the body, and therefore in the key: changing any of them is a different entry. Other
//! request headers are not part of the key; a header that changes the answer and is not in the
//! list above needs a cache per value.
//!
//! A body is hashed in canonical form only when that form means exactly what the bytes sent
//! mean: a body with a duplicate object key (servers disagree on which one wins) or an integer
//! too large for 64 bits (parsed here as a rounded float, by some servers exactly) is hashed
//! byte for byte instead.
//!
//! The API key itself is never stored anywhere: only a hash of it, mixed into the cache key.
//!
//! ```
//! use volley_core::cache_key::{CacheKey, CredentialId};
//! use volley_core::{ApiKey, Request};
//!
//! let credential = CredentialId::from_api_key(&ApiKey::new("sk-live-123"));
//! let a = Request::post("/chat/completions", r#"{"model":"m","temperature":0}"#).unwrap();
//! let b = Request::post("/chat/completions", r#"{ "temperature": 0, "model": "m" }"#).unwrap();
//! assert_eq!(
//!     CacheKey::for_request(&a, &credential),
//!     CacheKey::for_request(&b, &credential),
//! );
//! let other = CredentialId::from_api_key(&ApiKey::new("sk-live-456"));
//! assert_ne!(
//!     CacheKey::for_request(&a, &credential),
//!     CacheKey::for_request(&a, &other),
//! );
//! ```

use std::fmt;
use std::io::Write;

use http::{HeaderMap, Method};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::{ApiKey, Request};

/// The cache key of a request: 32 bytes of BLAKE3. `Display` and `Debug` print it as 64
/// lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

/// Request headers that change the answer to the same request body, so that two requests
/// differing in them never share a cache entry (see [`CredentialId::with_answer_headers`]).
pub const ANSWER_HEADERS: [&str; 3] = ["anthropic-version", "anthropic-beta", "openai-beta"];

/// The identity of a credential for caching: a BLAKE3 hash of the API key under a domain
/// separator of its own, so it can be neither turned back into the key nor confused with any
/// other hash Volley computes. `Debug` prints only its first 8 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialId([u8; 32]);

// BLAKE3 key-derivation contexts: globally unique, hard-coded, and versioned so a change of the
// key layout never reads entries written by an older one.
const CREDENTIAL_CONTEXT: &str = "volley 2026-11 credential id v1";
const KEY_CONTEXT: &str = "volley 2026-11 cache key v1";

impl CredentialId {
    /// The id of an API key.
    pub fn from_api_key(key: &ApiKey) -> CredentialId {
        let mut hasher = blake3::Hasher::new_derive_key(CREDENTIAL_CONTEXT);
        hasher.update(&[1]);
        hasher.update(key.expose().as_bytes());
        CredentialId(*hasher.finalize().as_bytes())
    }

    /// The id of a key used at one endpoint: `endpoint` (the base URL, say) and the key are
    /// hashed together, so two clients pointed at different servers never share entries even
    /// with the same key (or with none). Credential-like default headers (an Azure `api-key`,
    /// an organisation) are mixed in as `extra` parts.
    pub fn for_endpoint(endpoint: &str, key: Option<&ApiKey>, extra: &[&[u8]]) -> CredentialId {
        let mut hasher = blake3::Hasher::new_derive_key(CREDENTIAL_CONTEXT);
        hasher.update(&[2]);
        let mut part = |bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        part(endpoint.as_bytes());
        part(key.map_or(&b""[..], |k| k.expose().as_bytes()));
        for bytes in extra {
            part(bytes);
        }
        CredentialId(*hasher.finalize().as_bytes())
    }

    /// One id for several (the endpoints of a balanced client, any of which may answer): a
    /// hash of them all, in no particular order, equal to none of them.
    pub fn of_all(ids: impl IntoIterator<Item = CredentialId>) -> CredentialId {
        let mut ids: Vec<[u8; 32]> = ids.into_iter().map(|id| id.0).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut hasher = blake3::Hasher::new_derive_key(CREDENTIAL_CONTEXT);
        hasher.update(&[4]);
        hasher.update(&(ids.len() as u64).to_le_bytes());
        for id in &ids {
            hasher.update(id);
        }
        CredentialId(*hasher.finalize().as_bytes())
    }

    /// The id of an absent key (no `Authorization` header): a namespace of its own, equal to
    /// no key's id.
    pub fn anonymous() -> CredentialId {
        let mut hasher = blake3::Hasher::new_derive_key(CREDENTIAL_CONTEXT);
        hasher.update(&[0]);
        CredentialId(*hasher.finalize().as_bytes())
    }

    /// The id of `key`, or [`CredentialId::anonymous`] for `None` or an empty key.
    pub fn from_optional_key(key: Option<&ApiKey>) -> CredentialId {
        match key {
            Some(key) if !key.is_empty() => CredentialId::from_api_key(key),
            _ => CredentialId::anonymous(),
        }
    }

    /// This id narrowed by the credential-like headers a request carries itself
    /// ([`CREDENTIAL_HEADERS`](crate::headers::CREDENTIAL_HEADERS)): `self` when it carries
    /// none, otherwise a hash of `self` and every such header's name and values, so each
    /// distinct set of request credentials is a namespace of its own. The values are hashed
    /// under the credential-id context and never kept.
    pub fn with_request_headers(&self, headers: &HeaderMap) -> CredentialId {
        if headers.is_empty()
            || !headers.iter().any(|(name, value)| {
                crate::headers::is_credential_header(name) || value.is_sensitive()
            })
        {
            return *self;
        }
        let mut hasher = blake3::Hasher::new_derive_key(CREDENTIAL_CONTEXT);
        hasher.update(&[3]);
        hasher.update(&self.0);
        for name in crate::headers::CREDENTIAL_HEADERS {
            let values = headers.get_all(name);
            let count = values.iter().count() as u64;
            if count == 0 {
                continue;
            }
            field(&mut hasher, name.as_bytes());
            hasher.update(&count.to_le_bytes());
            for value in values {
                field(&mut hasher, value.as_bytes());
            }
        }
        // Then the other credentials (a gateway's key, a value marked sensitive), in name
        // order; a request with none hashes as before they were counted.
        let mut others: Vec<(&str, &[u8])> = headers
            .iter()
            .filter(|(name, value)| crate::headers::is_other_credential(name, value))
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        others.sort_unstable();
        for (name, value) in others {
            field(&mut hasher, name.as_bytes());
            field(&mut hasher, value);
        }
        CredentialId(*hasher.finalize().as_bytes())
    }

    /// This id narrowed by the headers a request carries itself that change the answer to
    /// the same body ([`ANSWER_HEADERS`]: the API version an answer is shaped by, the beta
    /// features it may use): `self` when it carries none. The client's own are part of its
    /// cache id already (`Transport::cache_id`).
    pub fn with_answer_headers(&self, headers: &HeaderMap) -> CredentialId {
        if !ANSWER_HEADERS
            .iter()
            .any(|name| headers.contains_key(*name))
        {
            return *self;
        }
        let mut hasher = blake3::Hasher::new_derive_key(CREDENTIAL_CONTEXT);
        hasher.update(&[5]);
        hasher.update(&self.0);
        for name in ANSWER_HEADERS {
            let values = headers.get_all(name);
            field(&mut hasher, name.as_bytes());
            hasher.update(&(values.iter().count() as u64).to_le_bytes());
            for value in values {
                field(&mut hasher, value.as_bytes());
            }
        }
        CredentialId(*hasher.finalize().as_bytes())
    }

    /// The 32 bytes of the hash.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialId(")?;
        write_hex(f, &self.0[..4])?;
        f.write_str("…)")
    }
}

impl CacheKey {
    /// The key of `request` sent by a client with `credential`: the request's own
    /// credential-like headers are mixed in (see [`CredentialId::with_request_headers`]), and
    /// the ones that shape the answer ([`CredentialId::with_answer_headers`]). A repetition
    /// ([`Request::with_repeat`]) other than the first has a key of its own.
    ///
    /// ```
    /// use volley_core::Request;
    /// use volley_core::cache_key::{CacheKey, CredentialId};
    ///
    /// let id = CredentialId::anonymous();
    /// let ask = || Request::post("/chat/completions", r#"{"model":"m"}"#).unwrap();
    /// let first = CacheKey::for_request(&ask(), &id);
    /// assert_eq!(first, CacheKey::for_request(&ask().with_repeat(0), &id));
    /// let second = CacheKey::for_request(&ask().with_repeat(1), &id);
    /// assert_ne!(first, second);
    /// assert_eq!(second, CacheKey::for_request(&ask().with_repeat(1), &id));
    /// ```
    pub fn for_request(request: &Request, credential: &CredentialId) -> CacheKey {
        let credential = credential
            .with_request_headers(request.headers())
            .with_answer_headers(request.headers());
        CacheKey::hash(
            request.method(),
            request.path(),
            request.body(),
            &credential,
            request.repeat(),
        )
    }

    /// The key of a request given by its parts (`path` with its query, if any), sent with
    /// exactly `credential` (request headers are not looked at: narrow the id with
    /// [`CredentialId::with_request_headers`] first, as [`CacheKey::for_request`] does).
    pub fn new(method: &Method, path: &str, body: &[u8], credential: &CredentialId) -> CacheKey {
        CacheKey::hash(method, path, body, credential, 0)
    }

    /// The key of a request's parts, and of its repetition `repeat` (0: the first, whose key
    /// mixes nothing in, so that keys stored before repeats were counted stay valid).
    fn hash(
        method: &Method,
        path: &str,
        body: &[u8],
        credential: &CredentialId,
        repeat: u32,
    ) -> CacheKey {
        let mut hasher = blake3::Hasher::new_derive_key(KEY_CONTEXT);
        // Every variable-length field is length-prefixed, so no two different requests can
        // hash the same byte string.
        hasher.update(credential.as_bytes());
        field(&mut hasher, method.as_str().as_bytes());
        field(&mut hasher, path.as_bytes());
        match serde_json::from_slice::<Strict>(body) {
            Ok(Strict(value)) => {
                hasher.update(b"J");
                // Writing to a hasher cannot fail.
                let _ = write_canonical(&mut hasher, &value);
            }
            Err(_) => {
                hasher.update(b"R");
                field(&mut hasher, body);
            }
        }
        // After the body, whose encoding ends it unambiguously (a length, or the canonical
        // JSON's closing), under a tag of its own.
        if repeat > 0 {
            hasher.update(b"N");
            hasher.update(&repeat.to_le_bytes());
        }
        CacheKey(*hasher.finalize().as_bytes())
    }

    /// A key from its 32 bytes (as a store read it back).
    pub const fn from_bytes(bytes: [u8; 32]) -> CacheKey {
        CacheKey(bytes)
    }

    /// The 32 bytes of the hash.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

/// `value` as canonical JSON: object keys sorted by their UTF-8 bytes, no white space,
/// strings escaped as `serde_json` escapes them, numbers as `serde_json` prints them.
///
/// This is the form the body is hashed in; it is exposed for tests and for tools that want to
/// show what a key covers.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write_canonical(&mut out, value);
    out
}

/// A JSON value whose canonical form means what its text means, or a parse error: duplicate
/// object keys and integers beyond 64 bits are refused (the body is then hashed raw).
struct Strict(Value);

/// Floats at or above 2^53 in magnitude with no fraction may be integers that did not fit 64
/// bits and were rounded: two different big integers would share a canonical form.
const EXACT_FLOAT_LIMIT: f64 = 9_007_199_254_740_992.0;

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON whose canonical form is exact")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        if v.fract() == 0.0 && v.abs() >= EXACT_FLOAT_LIMIT {
            return Err(E::custom("a number that may be a rounded big integer"));
        }
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if out.insert(key, value).is_some() {
                return Err(de::Error::custom("a duplicate object key"));
            }
        }
        Ok(Value::Object(out))
    }
}

fn field(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

fn write_canonical<W: Write>(out: &mut W, value: &Value) -> std::io::Result<()> {
    match value {
        Value::Null => out.write_all(b"null"),
        Value::Bool(true) => out.write_all(b"true"),
        Value::Bool(false) => out.write_all(b"false"),
        Value::Number(n) => write!(out, "{n}"),
        Value::String(s) => serde_json::to_writer(&mut *out, s).map_err(std::io::Error::from),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(out, item)?;
            }
            out.write_all(b"]")
        }
        Value::Object(map) => {
            // serde_json's map is sorted unless some crate in the build turns on its
            // `preserve_order` feature; sorting here keeps the key stable either way.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.write_all(b"{")?;
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(&mut *out, key).map_err(std::io::Error::from)?;
                out.write_all(b":")?;
                write_canonical(out, item)?;
            }
            out.write_all(b"}")
        }
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_id_of_several_is_none_of_them_and_order_free() {
        let key = |k: &str| CredentialId::from_api_key(&ApiKey::from(k));
        let (a, b) = (key("sk-a"), key("sk-b"));
        let both = CredentialId::of_all([a, b]);
        assert_eq!(both, CredentialId::of_all([b, a]));
        assert_eq!(both, CredentialId::of_all([a, b, a]));
        assert!(both != a && both != b);
        assert_ne!(CredentialId::of_all([a]), a);
    }

    #[test]
    fn endpoints_and_keys_are_separate_namespaces() {
        let key = ApiKey::new("sk-1");
        let a = CredentialId::for_endpoint("https://a.example/v1", Some(&key), &[]);
        let b = CredentialId::for_endpoint("https://b.example/v1", Some(&key), &[]);
        let c = CredentialId::for_endpoint("https://a.example/v1", None, &[]);
        let d = CredentialId::for_endpoint("https://a.example/v1", Some(&key), &[b"org-1"]);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(
            a,
            CredentialId::for_endpoint("https://a.example/v1", Some(&key), &[])
        );
        // Length prefixes: moving bytes between parts changes the id.
        assert_ne!(
            CredentialId::for_endpoint("ab", None, &[b"c"]),
            CredentialId::for_endpoint("a", None, &[b"bc"])
        );
    }

    use super::*;
    use proptest::prelude::*;

    fn key(body: &str, credential: &CredentialId) -> CacheKey {
        CacheKey::new(
            &Method::POST,
            "/chat/completions",
            body.as_bytes(),
            credential,
        )
    }

    #[test]
    fn canonical_form_sorts_keys_and_drops_white_space() {
        let value: Value =
            serde_json::from_str(r#"{ "b": [1, {"z": null, "a": "x\"y"}], "a": true }"#).unwrap();
        assert_eq!(
            String::from_utf8(canonical_json(&value)).unwrap(),
            r#"{"a":true,"b":[1,{"a":"x\"y","z":null}]}"#
        );
    }

    #[test]
    fn every_part_of_the_request_is_in_the_key() {
        let c = CredentialId::anonymous();
        let base = key(r#"{"model":"m"}"#, &c);
        assert_eq!(base, key("{\"model\" :\n\"m\"}", &c));
        assert_ne!(base, key(r#"{"model":"n"}"#, &c));
        assert_ne!(
            base,
            CacheKey::new(&Method::GET, "/chat/completions", br#"{"model":"m"}"#, &c)
        );
        assert_ne!(
            base,
            CacheKey::new(&Method::POST, "/embeddings", br#"{"model":"m"}"#, &c)
        );
        let keyed = CredentialId::from_api_key(&ApiKey::new("sk-a"));
        assert_ne!(base, key(r#"{"model":"m"}"#, &keyed));
        // Raw bodies are hashed as they are, and never collide with a JSON body.
        assert_ne!(key("not json", &c), key("not  json", &c));
        assert_ne!(key("\"s\"", &c), key("s", &c));
    }

    #[test]
    fn credential_ids_hide_the_key_and_separate_namespaces() {
        let a = CredentialId::from_api_key(&ApiKey::new("sk-secret-a"));
        let b = CredentialId::from_api_key(&ApiKey::new("sk-secret-b"));
        assert_ne!(a, b);
        assert_ne!(a, CredentialId::anonymous());
        assert_eq!(
            CredentialId::from_optional_key(None),
            CredentialId::anonymous()
        );
        assert_ne!(
            CredentialId::from_api_key(&ApiKey::new("")),
            CredentialId::anonymous()
        );
        assert_eq!(
            a,
            CredentialId::from_optional_key(Some(&ApiKey::new("sk-secret-a")))
        );
        assert!(!format!("{a:?}").contains("secret"));
        assert_eq!(format!("{a:?}").len(), "CredentialId(…)".len() + 8);
        // The id is not a plain hash of the key.
        assert_ne!(a.as_bytes(), blake3::hash(b"sk-secret-a").as_bytes());
    }

    #[test]
    fn request_credential_headers_are_separate_namespaces() {
        use http::HeaderValue;
        use http::header::AUTHORIZATION;
        let client = CredentialId::from_api_key(&ApiKey::new("sk-client"));
        let request = |value: Option<&'static str>| {
            let r = Request::post("/chat/completions", r#"{"model":"m"}"#).unwrap();
            match value {
                Some(v) => r.with_header(AUTHORIZATION, HeaderValue::from_static(v)),
                None => r,
            }
        };
        let plain = CacheKey::for_request(&request(None), &client);
        let a = CacheKey::for_request(&request(Some("Bearer tenant-a")), &client);
        let b = CacheKey::for_request(&request(Some("Bearer tenant-b")), &client);
        assert_ne!(a, b);
        assert_ne!(a, plain);
        assert_eq!(
            a,
            CacheKey::for_request(&request(Some("Bearer tenant-a")), &client)
        );
        // Headers that carry no credential leave the key as it was.
        let other = request(None).with_header(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        assert_eq!(CacheKey::for_request(&other, &client), plain);
        for name in crate::headers::CREDENTIAL_HEADERS {
            let r = request(None).with_header(
                http::HeaderName::from_static(name),
                HeaderValue::from_static("x"),
            );
            assert_ne!(CacheKey::for_request(&r, &client), plain, "{name}");
        }
        // A gateway's own key, by its name or marked sensitive: one namespace per value.
        let gateway = |value: &'static str| {
            request(None).with_header(
                http::HeaderName::from_static("helicone-auth"),
                HeaderValue::from_static(value),
            )
        };
        let (one, two) = (
            CacheKey::for_request(&gateway("a"), &client),
            CacheKey::for_request(&gateway("b"), &client),
        );
        assert!(one != plain && two != plain && one != two);
        let mut marked = HeaderValue::from_static("t");
        marked.set_sensitive(true);
        let tenant = request(None).with_header(http::HeaderName::from_static("x-tenant"), marked);
        assert_ne!(CacheKey::for_request(&tenant, &client), plain);
        // An idempotency key is new on every request: not part of the key.
        let idempotent = request(None).with_header(
            http::HeaderName::from_static("idempotency-key"),
            HeaderValue::from_static("k-1"),
        );
        assert_eq!(CacheKey::for_request(&idempotent, &client), plain);
        // A request's own beta features or API version shape its answer: a key of its own.
        let beta = |value: &'static str| {
            request(None).with_header(
                http::HeaderName::from_static("anthropic-beta"),
                HeaderValue::from_static(value),
            )
        };
        let (one, two) = (
            CacheKey::for_request(&beta("context-1m-2025-08-07"), &client),
            CacheKey::for_request(&beta("output-128k-2025-02-19"), &client),
        );
        assert!(one != plain && two != plain && one != two);
        assert_eq!(
            CacheKey::for_request(&beta("context-1m-2025-08-07"), &client),
            one
        );
        for name in ANSWER_HEADERS {
            let r = request(None).with_header(
                http::HeaderName::from_static(name),
                HeaderValue::from_static("x"),
            );
            assert_ne!(CacheKey::for_request(&r, &client), plain, "{name}");
        }
    }

    #[test]
    fn bodies_whose_canonical_form_would_lie_are_hashed_raw() {
        let c = CredentialId::anonymous();
        // Which duplicate wins depends on the server: never share a key with either.
        let dup = key(r#"{"model":"a","model":"b"}"#, &c);
        assert_ne!(dup, key(r#"{"model":"b"}"#, &c));
        assert_ne!(dup, key(r#"{"model":"a"}"#, &c));
        // Integers beyond u64 are exact for some servers and rounded by serde_json.
        assert_ne!(
            key(r#"{"seed":18446744073709551616}"#, &c),
            key(r#"{"seed":18446744073709551617}"#, &c)
        );
        assert_ne!(
            key(r#"{"seed":-9223372036854775809}"#, &c),
            key(r#"{"seed":-9223372036854775810}"#, &c)
        );
        // Ordinary numbers keep their canonical form.
        assert_eq!(
            key(r#"{"t":0.5,"n":18446744073709551615}"#, &c),
            key(r#"{ "n": 18446744073709551615, "t": 0.5 }"#, &c)
        );
    }

    #[test]
    fn keys_print_as_hex() {
        let k = CacheKey::from_bytes([0xab; 32]);
        assert_eq!(k.to_string(), "ab".repeat(32));
        assert_eq!(format!("{k:?}"), format!("CacheKey({})", "ab".repeat(32)));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z\"\\\\ é]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// `value` written with object keys in reverse order and white space around every token.
    fn scrambled(value: &Value) -> String {
        match value {
            Value::Array(items) => {
                let parts: Vec<String> = items.iter().map(scrambled).collect();
                format!("[ {} ]", parts.join(" ,\n "))
            }
            Value::Object(map) => {
                let parts: Vec<String> = map
                    .iter()
                    .rev()
                    .map(|(k, v)| format!("{} :\t{}", Value::String(k.clone()), scrambled(v)))
                    .collect();
                format!("{{\n {} }}", parts.join(" , "))
            }
            leaf => format!(" {leaf} "),
        }
    }

    proptest! {
        #[test]
        fn key_ignores_key_order_and_white_space(value in json_value()) {
            let c = CredentialId::anonymous();
            let compact = serde_json::to_string(&value).unwrap();
            prop_assert_eq!(key(&compact, &c), key(&scrambled(&value), &c));
        }

        #[test]
        fn key_changes_when_a_value_changes(value in json_value(), other in json_value()) {
            prop_assume!(value != other);
            let c = CredentialId::anonymous();
            let a = serde_json::to_string(&value).unwrap();
            let b = serde_json::to_string(&other).unwrap();
            prop_assert_ne!(key(&a, &c), key(&b, &c));
        }
    }

    /// The canonical form keeps every scalar's value: bodies that differ in one boolean,
    /// integer, null or integral float get different keys, while white space and key order
    /// still do not matter (each body is canonicalised, not hashed raw).
    #[test]
    fn every_scalar_kind_is_kept_and_canonicalised() {
        let c = CredentialId::anonymous();
        let k = |body: &str| CacheKey::new(&Method::POST, "/v1/x", body.as_bytes(), &c);
        let variants: [(&str, &str, &str); 7] = [
            (
                r#"{"a":true,"b":1}"#,
                r#"{ "b": 1, "a": true }"#,
                r#"{"a":false,"b":1}"#,
            ),
            (
                r#"{"a":-3,"b":1}"#,
                r#"{ "b": 1, "a": -3 }"#,
                r#"{"a":-4,"b":1}"#,
            ),
            (
                r#"{"a":7,"b":1}"#,
                r#"{ "b": 1, "a": 7 }"#,
                r#"{"a":8,"b":1}"#,
            ),
            (
                r#"{"a":null,"b":1}"#,
                r#"{ "b": 1, "a": null }"#,
                r#"{"a":false,"b":1}"#,
            ),
            (
                r#"{"a":1.0,"b":1}"#,
                r#"{ "b": 1, "a": 1.0 }"#,
                r#"{"a":2.0,"b":1}"#,
            ),
            (
                r#"{"a":2.5,"b":1}"#,
                r#"{ "b": 1, "a": 2.5 }"#,
                r#"{"a":3.5,"b":1}"#,
            ),
            (
                r#"{"a":"x\n","b":1}"#,
                r#"{ "b": 1, "a": "x\n" }"#,
                r#"{"a":"x","b":1}"#,
            ),
        ];
        for (body, same, other) in variants {
            assert_eq!(k(body), k(same), "{body} and {same} mean the same");
            assert_ne!(k(body), k(other), "{body} and {other} differ");
        }
    }

    #[test]
    fn an_empty_key_is_no_key() {
        assert_eq!(
            CredentialId::from_optional_key(Some(&ApiKey::new(""))),
            CredentialId::anonymous()
        );
        assert_ne!(
            CredentialId::from_optional_key(Some(&ApiKey::new("sk-1"))),
            CredentialId::anonymous()
        );
    }

    #[test]
    fn a_key_is_its_bytes() {
        let bytes = std::array::from_fn(|i| i as u8);
        assert_eq!(CacheKey::from_bytes(bytes).as_bytes(), &bytes);
    }
}
