//! The types of setting values that need more than a number or a string: what they accept,
//! how they are shown (never with a password), and how they travel through the layers (serde).

use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use volley::core::duration::HumanDuration;
use volley::core::redact::redact_url;

/// How a value is shown by `--print-config` and at the start of a run: secrets in URLs as
/// `***`, limits and timeouts of 0 as `off`.
pub(crate) trait Show {
    fn show(&self) -> String;
}

macro_rules! show_display {
    ($($ty:ty),* $(,)?) => {
        $(impl Show for $ty {
            fn show(&self) -> String {
                self.to_string()
            }
        })*
    };
}

show_display!(
    bool,
    u32,
    NonZeroU32,
    NonZeroUsize,
    Prefix,
    FailureSpec,
    CacheSpec,
    SharedLimitSpec,
    FsyncMode,
    ConcurrencySpec,
    ProviderSpec,
    AnthropicAuthSpec,
    HedgeSpec,
    Share,
    HealthCheckSpec,
    RetryOn,
    ByteSize
);

/// An optional string (a URL or a name): `none` when unset, a URL without its secrets.
impl Show for Option<String> {
    fn show(&self) -> String {
        self.as_ref().map_or_else(|| "none".to_owned(), Show::show)
    }
}

/// An optional file.
impl Show for Option<PathBuf> {
    fn show(&self) -> String {
        self.as_ref()
            .map_or_else(|| "none".to_owned(), |p| p.display().to_string())
    }
}

impl Show for String {
    fn show(&self) -> String {
        // Strings are URLs or names; a URL may carry a password, with or without a scheme (a
        // proxy written `user:password@host:port` is an http:// one, as for curl).
        if self.contains("://") || self.contains('@') {
            redact_url(self)
        } else {
            self.clone()
        }
    }
}

/// Durations of settings are timeouts: 0 turns them off.
impl Show for HumanDuration {
    fn show(&self) -> String {
        if self.0.is_zero() {
            "off".to_owned()
        } else {
            self.to_string()
        }
    }
}

/// A limit per minute: `None` (not given, or `auto`) is learned from the provider's
/// `x-ratelimit-limit-*` headers; `Some(0)` (0 or `off`) is no limit and no learning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limit<T>(pub(crate) Option<T>);

impl<T: Copy> Limit<T> {
    /// `None` to learn the limit, `Some(0)` for none, `Some(n)` for `n`.
    pub(crate) fn get(self) -> Option<T> {
        self.0
    }
}

impl<T: fmt::Display + Copy + Into<u64>> Show for Limit<T> {
    fn show(&self) -> String {
        match self.0 {
            None => "auto".to_owned(),
            Some(n) if n.into() == 0 => "off".to_owned(),
            Some(n) => n.to_string(),
        }
    }
}

impl<T: Serialize> Serialize for Limit<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(n) => n.serialize(serializer),
            None => serializer.serialize_str("auto"),
        }
    }
}

impl<'de, T: TryFrom<u64>> Deserialize<'de> for Limit<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LimitVisitor<T>(std::marker::PhantomData<T>);
        impl<T: TryFrom<u64>> Visitor<'_> for LimitVisitor<T> {
            type Value = Limit<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a whole number >= 0 (0 or \"off\": no limit; \"auto\": learned from the \
                     provider's headers)",
                )
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                T::try_from(n)
                    .map(|n| Limit(Some(n)))
                    .map_err(|_| E::custom(format!("{n} is too large")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                u64::try_from(n)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(n), &self))
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                match s.trim() {
                    "auto" => Ok(Limit(None)),
                    "off" | "none" | "unlimited" => self.visit_u64(0),
                    n => n
                        .parse::<u64>()
                        .map_err(|_| E::invalid_value(de::Unexpected::Str(s), &self))
                        .and_then(|n| self.visit_u64(n)),
                }
            }
        }
        deserializer.deserialize_any(LimitVisitor(std::marker::PhantomData))
    }
}

/// Serde through the text form: types read from strings (a number is read as its digits),
/// written as their full text. `Display` may hide secrets; `raw` must not.
macro_rules! serde_as_text {
    ($($ty:ty),* $(,)?) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.raw())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(TextVisitor(std::marker::PhantomData))
            }
        }
    )*};
}

serde_as_text!(
    CacheSpec,
    SharedLimitSpec,
    FailureSpec,
    Prefix,
    FsyncMode,
    ConcurrencySpec,
    ProviderSpec,
    AnthropicAuthSpec,
    HedgeSpec,
    Share,
    HealthCheckSpec,
    RetryOn,
    ByteSize
);

/// A setting whose values are a library type's own, parsed and shown by the library's one
/// rule.
macro_rules! library_value {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub(crate) struct $name(pub(crate) $inner);

        impl $name {
            fn raw(&self) -> String {
                self.to_string()
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse()
                    .map($name)
                    .map_err(|e: volley::Error| e.to_string())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

library_value!(
    /// `--provider`: whose conventions the API follows (`openai`, `azure`, `anthropic`).
    ProviderSpec(volley::Provider)
);

library_value!(
    /// `--anthropic-auth`: how an Anthropic key is sent (`bearer`, `x-api-key`).
    AnthropicAuthSpec(volley::transport::AnthropicAuth)
);

/// `--concurrency`: a fixed number of requests in flight, or `auto` / `auto:MAX`, an
/// adaptive limit of at most MAX (256 when not said) that finds the server's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConcurrencySpec {
    Fixed(NonZeroUsize),
    Auto(NonZeroUsize),
}

impl ConcurrencySpec {
    /// The most requests in flight: the fixed number, or the adaptive limit's ceiling.
    pub(crate) fn get(self) -> usize {
        match self {
            ConcurrencySpec::Fixed(n) | ConcurrencySpec::Auto(n) => n.get(),
        }
    }

    /// Whether the limit adapts.
    pub(crate) fn is_auto(self) -> bool {
        matches!(self, ConcurrencySpec::Auto(_))
    }

    fn raw(&self) -> String {
        self.to_string()
    }
}

impl Default for ConcurrencySpec {
    /// `auto:256`: adaptive, at most the library's default concurrency.
    fn default() -> ConcurrencySpec {
        // The library's default concurrency is a positive constant (256).
        let max = NonZeroUsize::new(volley::DEFAULT_CONCURRENCY)
            .expect("the default concurrency is not 0");
        ConcurrencySpec::Auto(max)
    }
}

impl FromStr for ConcurrencySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let count = |n: &str| {
            n.trim().parse::<NonZeroUsize>().map_err(|_| {
                format!("{s:?} is not a concurrency: expected a nonzero number N, auto or auto:MAX")
            })
        };
        match s.trim() {
            "auto" => Ok(ConcurrencySpec::default()),
            t => match t.strip_prefix("auto:") {
                Some(max) => Ok(ConcurrencySpec::Auto(count(max)?)),
                None => Ok(ConcurrencySpec::Fixed(count(t)?)),
            },
        }
    }
}

impl fmt::Display for ConcurrencySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConcurrencySpec::Fixed(n) => write!(f, "{n}"),
            ConcurrencySpec::Auto(n) => write!(f, "auto:{n}"),
        }
    }
}

struct TextVisitor<T>(std::marker::PhantomData<T>);

impl<T: FromStr<Err = String>> Visitor<'_> for TextVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        s.parse().map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
        self.visit_str(&n.to_string())
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
        self.visit_str(&n.to_string())
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<T, E> {
        self.visit_str(&n.to_string())
    }
}

/// `--hedge`: off, a fixed delay (`2s`), or a percentile of recent answers (`p95`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) enum HedgeSpec {
    #[default]
    Off,
    After(std::time::Duration),
    Percentile(f64),
}

impl HedgeSpec {
    fn raw(&self) -> String {
        self.to_string()
    }

    /// The library's setting, with `budget`; `None` when off.
    pub(crate) fn hedging(self, budget: Share) -> Option<volley::Hedging> {
        let hedging = match self {
            HedgeSpec::Off => return None,
            HedgeSpec::After(delay) => volley::Hedging::after(delay),
            HedgeSpec::Percentile(p) => volley::Hedging::at_percentile(p),
        };
        Some(hedging.budget(budget.0))
    }
}

impl FromStr for HedgeSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("off") {
            return Ok(HedgeSpec::Off);
        }
        if let Some(p) = t.strip_prefix(['p', 'P']) {
            return p
                .parse::<f64>()
                .ok()
                .filter(|p| (50.0..=99.9).contains(p))
                .map(HedgeSpec::Percentile)
                .ok_or_else(|| {
                    format!("{s:?} is not a hedge percentile: expected p50 to p99.9, e.g. p95")
                });
        }
        match volley::core::duration::parse_duration(t) {
            Ok(d) if !d.is_zero() => Ok(HedgeSpec::After(d)),
            _ => Err(format!(
                "{s:?} is not a hedge: expected off, a delay such as 2s, or a percentile of \
                 recent answers such as p95"
            )),
        }
    }
}

impl fmt::Display for HedgeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HedgeSpec::Off => f.write_str("off"),
            HedgeSpec::After(d) => HumanDuration(*d).fmt(f),
            HedgeSpec::Percentile(p) => write!(f, "p{p}"),
        }
    }
}

/// A share from 0 to 1, written `0.05` or `5%`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Share(pub(crate) f64);

impl Share {
    fn raw(&self) -> String {
        self.0.to_string()
    }
}

impl FromStr for Share {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let value = match t.strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
            None => t.parse::<f64>(),
        };
        value
            .ok()
            .filter(|v| (0.0..=1.0).contains(v))
            .map(Share)
            .ok_or_else(|| format!("{s:?} is not a share: expected 0 to 1, or 0% to 100%"))
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", (self.0 * 1000.0).round() / 10.0)
    }
}

/// `--health-check`: the path of the active health check under each endpoint's base URL
/// (`/models`), or `off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthCheckSpec(pub(crate) Option<http::uri::PathAndQuery>);

impl HealthCheckSpec {
    /// The whole path, query included (`Display` hides the query).
    fn raw(&self) -> String {
        match &self.0 {
            None => "off".to_owned(),
            Some(path) => path.as_str().to_owned(),
        }
    }
}

impl Default for HealthCheckSpec {
    fn default() -> HealthCheckSpec {
        HealthCheckSpec(Some(http::uri::PathAndQuery::from_static("/models")))
    }
}

impl FromStr for HealthCheckSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("off") {
            return Ok(HealthCheckSpec(None));
        }
        // Messages show the path without its query, which may carry a key.
        let shown = volley::core::redact::quoted_path(t);
        if !t.starts_with('/') {
            return Err(format!(
                "{shown} is not a health check: expected a path under the base URL such as \
                 /models, or off"
            ));
        }
        // The parser's own error is left out: it could quote the query.
        t.parse::<http::uri::PathAndQuery>()
            .map(|p| HealthCheckSpec(Some(p)))
            .map_err(|_| format!("{shown} is not a valid health check path"))
    }
}

/// The path, its query (which may carry a key) shown as `?***`.
impl fmt::Display for HealthCheckSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("off"),
            Some(path) if path.query().is_some() => write!(f, "{}?***", path.path()),
            Some(path) => f.write_str(path.as_str()),
        }
    }
}

/// When `volley run` `fsync`s its outcome files (`--fsync`): `always` or `interval` (the
/// engine's cadence). Outcomes are written at once either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FsyncMode(pub(crate) volley_batch::Fsync);

impl FsyncMode {
    fn raw(&self) -> String {
        self.to_string()
    }
}

impl FromStr for FsyncMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(FsyncMode).map_err(|e| e.to_string())
    }
}

impl fmt::Display for FsyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What `--cache` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum CacheSpec {
    /// No cache.
    #[default]
    Off,
    /// In memory: [`MEMORY_CACHE_BYTES`](super::MEMORY_CACHE_BYTES) for
    /// [`MEMORY_CACHE_TTL`](super::MEMORY_CACHE_TTL).
    Memory,
    /// On disk in this directory, for [`DISK_CACHE_TTL`](super::DISK_CACHE_TTL).
    Disk(PathBuf),
    /// In Redis, shared with every process using it, for
    /// [`REDIS_CACHE_TTL`](super::REDIS_CACHE_TTL).
    Redis(RedisUrl),
}

impl CacheSpec {
    fn raw(&self) -> String {
        match self {
            CacheSpec::Redis(url) => url.expose().to_owned(),
            other => other.to_string(),
        }
    }
}

impl FromStr for CacheSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" | "none" => Ok(CacheSpec::Off),
            "memory" => Ok(CacheSpec::Memory),
            other if RedisUrl::looks_like(other) => Ok(CacheSpec::Redis(other.parse()?)),
            other => match other.strip_prefix("disk:") {
                Some(path) if !path.trim().is_empty() => {
                    Ok(CacheSpec::Disk(super::file::expand_home(path.trim())))
                }
                _ => Err(format!(
                    "invalid cache {:?}: expected memory, disk:PATH, redis://HOST[:PORT] or off",
                    shown(other)
                )),
            },
        }
    }
}

impl fmt::Display for CacheSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheSpec::Off => f.write_str("off"),
            CacheSpec::Memory => f.write_str("memory"),
            CacheSpec::Disk(path) => write!(f, "disk:{}", path.display()),
            CacheSpec::Redis(url) => url.fmt(f),
        }
    }
}

/// A Redis URL: `redis://`, `rediss://` (TLS) or `redis+unix://`. `Display` and `Debug` hide
/// its password; [`RedisUrl::expose`] gives the whole URL, to connect with.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RedisUrl(String);

impl RedisUrl {
    const SCHEMES: [&'static str; 3] = ["redis://", "rediss://", "redis+unix://"];

    fn looks_like(s: &str) -> bool {
        Self::SCHEMES.iter().any(|scheme| s.starts_with(scheme))
    }

    /// The URL, password included: for connecting only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for RedisUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if !Self::looks_like(s) {
            return Err(format!(
                "invalid Redis URL {:?}: expected redis://[:PASSWORD@]HOST[:PORT][/DB], \
                 rediss://... (TLS) or redis+unix:///PATH",
                shown(s)
            ));
        }
        Ok(RedisUrl(s.to_owned()))
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// `s` as it may be shown in an error: a mistyped URL without its password.
fn shown(s: &str) -> String {
    if s.contains("://") || s.contains('@') {
        redact_url(s)
    } else {
        s.to_owned()
    }
}

/// What `--shared-limit` asks for: a Redis URL, or `off`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum SharedLimitSpec {
    #[default]
    Off,
    Redis(RedisUrl),
}

impl SharedLimitSpec {
    fn raw(&self) -> String {
        match self {
            SharedLimitSpec::Off => "off".to_owned(),
            SharedLimitSpec::Redis(url) => url.expose().to_owned(),
        }
    }
}

impl FromStr for SharedLimitSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" | "none" => Ok(SharedLimitSpec::Off),
            other => Ok(SharedLimitSpec::Redis(other.parse()?)),
        }
    }
}

impl fmt::Display for SharedLimitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SharedLimitSpec::Off => f.write_str("off"),
            SharedLimitSpec::Redis(url) => url.fmt(f),
        }
    }
}

/// `--retry-on`: which failed attempts are sent again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum RetryOn {
    /// Connection failures, timeouts, a stream broken before its first chunk, 429, 408, 409
    /// and every 5xx but 501, 505-508, 510 and 511: the library's default. A timeout, a 5xx or a
    /// broken stream may come after the provider did (and billed) the work.
    #[default]
    Failures,
    /// Only what cannot have been billed: 429, 529, a 503 with `Retry-After`, a 408 without
    /// an error object, Cloudflare's 521-523, 525 and 526, and failures before any byte of
    /// the request was sent.
    Unbilled,
}

impl RetryOn {
    fn raw(&self) -> String {
        self.to_string()
    }

    /// The library's retry classifier for it.
    pub(crate) fn classifier(
        self,
    ) -> fn(&volley::Error, u32) -> volley::middleware::retry::Decision {
        match self {
            RetryOn::Failures => volley::middleware::retry::classify_default,
            RetryOn::Unbilled => volley::middleware::retry::classify_safe_only,
        }
    }
}

impl FromStr for RetryOn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "failures" => Ok(RetryOn::Failures),
            "unbilled" => Ok(RetryOn::Unbilled),
            _ => Err(format!(
                "invalid retry choice {s:?}: expected failures (connection failures, timeouts, \
                 429, 5xx) or unbilled (only what cannot have been billed)"
            )),
        }
    }
}

impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RetryOn::Failures => "failures",
            RetryOn::Unbilled => "unbilled",
        })
    }
}

/// What `--redis-failure` asks for when Redis cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum FailureSpec {
    /// Send nothing until Redis is back.
    #[default]
    FailClosed,
    /// Go on with a local limiter holding this share (1/N) of the limits.
    Fallback(u32),
}

impl FailureSpec {
    fn raw(&self) -> String {
        self.to_string()
    }
}

impl FromStr for FailureSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "fail-closed" {
            return Ok(FailureSpec::FailClosed);
        }
        match s.strip_prefix("fallback:").map(|n| n.trim().parse::<u32>()) {
            Some(Ok(n)) if n >= 1 => Ok(FailureSpec::Fallback(n)),
            _ => Err(format!(
                "invalid Redis failure mode {s:?}: expected fail-closed or fallback:N (N, at \
                 least 1, the number of processes sharing the limit: each goes on alone with \
                 1/N of it)"
            )),
        }
    }
}

impl fmt::Display for FailureSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureSpec::FailClosed => f.write_str("fail-closed"),
            FailureSpec::Fallback(n) => write!(f, "fallback:{n}"),
        }
    }
}

/// A size in bytes: a whole number, with an optional unit: `B`, `KB`, `MB`, `GB` (powers of
/// 1000) or `KiB`, `MiB`, `GiB` (powers of 1024), in any case, e.g. `64MiB` or `100 MB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSize(pub(crate) u64);

impl ByteSize {
    fn raw(&self) -> String {
        self.to_string()
    }

    /// As a `usize` for the library's limits (saturating on 32-bit targets).
    pub(crate) fn get(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{s:?} is not a size: a whole number above 0 with an optional unit, B, KB, MB, \
                 GB, KiB, MiB or GiB (e.g. 64MiB)"
            )
        };
        let s = s.trim();
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(digits);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            _ => return Err(bad()),
        };
        match number.checked_mul(scale) {
            Some(0) => Err(bad()),
            Some(bytes) => Ok(ByteSize(bytes)),
            None => Err(format!("{s:?} is too large")),
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n.is_multiple_of(size) {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}")
    }
}

/// A Redis key prefix: a non-empty word without white space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prefix(String);

impl Prefix {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    fn raw(&self) -> String {
        self.0.clone()
    }
}

impl Default for Prefix {
    fn default() -> Self {
        Prefix(super::DEFAULT_SHARED_PREFIX.to_owned())
    }
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s.chars().any(char::is_whitespace) {
            return Err("the prefix must be a non-empty word without spaces, e.g. prod".to_owned());
        }
        Ok(Prefix(s.to_owned()))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_units_and_show_the_largest_whole_one() {
        let size = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(size("64MiB"), Ok(64 << 20));
        assert_eq!(size(" 100 mb "), Ok(100_000_000));
        assert_eq!(size("1GiB"), Ok(1 << 30));
        assert_eq!(size("12345"), Ok(12_345));
        assert_eq!(size("2kb"), Ok(2_000));
        for bad in [
            "",
            "0",
            "MiB",
            "1.5MiB",
            "-1",
            "10 TB",
            "99999999999999999999",
        ] {
            assert!(size(bad).is_err(), "{bad}");
        }
        assert!(size("20000000000GiB").unwrap_err().contains("too large"));
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(ByteSize(1 << 30).to_string(), "1GiB");
        assert_eq!(ByteSize(100_000_000).to_string(), "100000000");
        assert_eq!(ByteSize(3 << 10).to_string(), "3KiB");
    }

    #[test]
    fn cache_specs_parse_and_print() {
        assert_eq!("memory".parse::<CacheSpec>(), Ok(CacheSpec::Memory));
        assert_eq!("off".parse::<CacheSpec>(), Ok(CacheSpec::Off));
        assert_eq!(
            "disk:/tmp/c".parse::<CacheSpec>(),
            Ok(CacheSpec::Disk("/tmp/c".into()))
        );
        assert_eq!(CacheSpec::Disk("a b".into()).to_string(), "disk:a b");
        assert!("disk:".parse::<CacheSpec>().is_err());
        let redis = "rediss://user:hunter2@cache.example:6380/2"
            .parse::<CacheSpec>()
            .unwrap();
        assert_eq!(redis.to_string(), "rediss://***@cache.example:6380/2");
        assert!(!format!("{redis:?}").contains("hunter2"));
        // The full URL travels through the layers; only the text shown hides it.
        assert_eq!(redis.raw(), "rediss://user:hunter2@cache.example:6380/2");
        assert_eq!(
            "fallback:3".parse::<FailureSpec>(),
            Ok(FailureSpec::Fallback(3))
        );
        assert_eq!(FailureSpec::Fallback(3).to_string(), "fallback:3");
        assert_eq!(
            "always".parse::<FsyncMode>(),
            Ok(FsyncMode(volley_batch::Fsync::Always))
        );
        assert_eq!(FsyncMode::default().to_string(), "interval");
        assert!("never".parse::<FsyncMode>().unwrap_err().contains("always"));
        assert!("memory:1".parse::<CacheSpec>().is_err());
        let err = "redis:/:hunter2@host".parse::<CacheSpec>().unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn values_are_shown_without_secrets_and_zero_as_off() {
        assert_eq!(
            "https://u:secret@host/v1".to_owned().show(),
            "https://***@host/v1"
        );
        assert_eq!("OPENAI_API_KEY".to_owned().show(), "OPENAI_API_KEY");
        assert_eq!(HumanDuration(std::time::Duration::ZERO).show(), "off");
        assert_eq!(
            HumanDuration(std::time::Duration::from_secs(600)).show(),
            "10m"
        );
        assert_eq!(Limit::<u32>(None).show(), "auto");
        assert_eq!(Limit(Some(0u32)).show(), "off");
        assert_eq!(Limit(Some(60u32)).show(), "60");
    }

    #[test]
    fn balancing_values_parse_and_print() {
        for (text, shown) in [
            ("off", "off"),
            ("2s", "2s"),
            ("1500ms", "1500ms"),
            ("p95", "p95"),
            ("P99.5", "p99.5"),
        ] {
            let spec: HedgeSpec = text.parse().unwrap();
            assert_eq!(spec.show(), shown, "{text}");
            assert_eq!(spec.show().parse::<HedgeSpec>().unwrap(), spec, "{text}");
        }
        assert_eq!(HedgeSpec::Off.hedging(Share(0.05)), None);
        let hedging = HedgeSpec::Percentile(95.0).hedging(Share(0.1)).unwrap();
        assert_eq!(hedging.percentile(), Some(95.0));
        assert_eq!(hedging.budget_share(), 0.1);
        for bad in ["0", "p20", "p100", "soon", "-1s"] {
            let err = bad.parse::<HedgeSpec>().unwrap_err();
            assert!(err.contains("hedge"), "{bad}: {err}");
        }
        assert_eq!("5%".parse::<Share>().unwrap(), Share(0.05));
        assert_eq!("0.25".parse::<Share>().unwrap(), Share(0.25));
        assert_eq!(Share(0.05).show(), "5%");
        for bad in ["150%", "-0.1", "half"] {
            assert!(bad.parse::<Share>().is_err(), "{bad}");
        }
        assert_eq!(HealthCheckSpec::default().show(), "/models");
        assert_eq!("off".parse::<HealthCheckSpec>().unwrap().0, None);
        // The query is sent as written, and shown as ?*** (it may carry a key).
        let with_query = "/health?api-key=sk-hc-1"
            .parse::<HealthCheckSpec>()
            .unwrap();
        assert_eq!(
            with_query.0.as_ref().map(|p| p.as_str()),
            Some("/health?api-key=sk-hc-1")
        );
        assert_eq!(with_query.show(), "/health?***");
        // Settings pass between layers in their raw form, which keeps the query.
        assert_eq!(with_query.raw(), "/health?api-key=sk-hc-1");
        let json = serde_json::to_string(&with_query).unwrap();
        assert_eq!(
            serde_json::from_str::<HealthCheckSpec>(&json).unwrap(),
            with_query
        );
        assert!("models".parse::<HealthCheckSpec>().is_err());
        for bad in ["models?api-key=sk-hc-1", "/bad path?api-key=sk-hc-1"] {
            let err = bad.parse::<HealthCheckSpec>().unwrap_err();
            assert!(!err.contains("sk-hc-1") && err.contains("?***"), "{err}");
        }
    }

    #[test]
    fn concurrency_specs_parse_and_print() {
        for (text, shown) in [
            ("64", "64"),
            ("auto", "auto:256"),
            ("auto:512", "auto:512"),
            (" auto:8 ", "auto:8"),
        ] {
            let spec: ConcurrencySpec = text.parse().unwrap();
            assert_eq!(spec.show(), shown, "{text}");
            assert_eq!(spec.is_auto(), text.contains("auto"), "{text}");
        }
        assert_eq!("auto:512".parse::<ConcurrencySpec>().unwrap().get(), 512);
        for bad in ["0", "auto:0", "auto:", "lots", "-1"] {
            let err = bad.parse::<ConcurrencySpec>().unwrap_err();
            assert!(err.contains("not a concurrency"), "{bad}: {err}");
        }
    }
}
