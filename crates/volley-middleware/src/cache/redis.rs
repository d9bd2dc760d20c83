//! [`RedisStore`]: a cache shared by every process that talks to one Redis (feature `redis`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::redis::{RedisWrite, ToRedisArgs, ToSingleRedisArg};
use volley_core::cache_key::{CacheKey, CredentialId};
use volley_core::{BoxError, Error};

use super::store::{CacheStore, CachedResponse, RejectedEntry, StoreFuture};
use crate::redis::{RedisConnection, RedisOptions};

/// The default of [`RedisStore::prefix`].
pub const DEFAULT_PREFIX: &str = "volley";
/// The default of [`RedisStore::compress_above`]: 1 KiB.
pub const DEFAULT_COMPRESS_ABOVE: usize = 1024;
/// The default of [`RedisStore::max_value_bytes`]: 16 MiB, room for the largest entry the
/// cache layer stores by default (8 MiB of body, see
/// [`DEFAULT_MAX_ENTRY_BYTES`](super::DEFAULT_MAX_ENTRY_BYTES)) with its headers and envelope.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 16 << 20;

/// Values up to this size are encoded, compressed and decoded on the calling (runtime) thread:
/// lz4 does 16 KiB in a few tens of microseconds. Larger ones go to the blocking pool.
const INLINE_BYTES: usize = 16 * 1024;

/// The first byte of every stored value says how the rest is laid out, so that a store of a
/// later version can change the layout and an older one reads the new values as misses.
/// `CachedResponse::encode` bytes as they are.
const TAG_PLAIN: u8 = 0;
/// The uncompressed length (u32, little-endian), then the `CachedResponse::encode` bytes
/// compressed as one lz4 block.
const TAG_LZ4: u8 = 1;
/// The envelope every value is written in: this byte, a 32-byte BLAKE3 MAC, then a value of
/// one of the formats above. The MAC covers the Redis key and the value, under a key derived
/// from the credential (and the store's secret), so an entry written by anyone without them,
/// or moved to another key, fails authentication. A bare value of the formats above has no
/// MAC and is refused as well.
const TAG_AUTHENTICATED: u8 = 2;
/// The BLAKE3 key-derivation context of the MAC key: versioned, never reused.
const MAC_CONTEXT: &str = "volley 2026-11 redis cache entry mac v1";

/// Responses kept in Redis, shared by every process (and every machine) that uses the same
/// server and prefix: a batch split over many workers pays for each identical request once.
///
/// Each entry is one Redis string under `PREFIX:cache:HEX`, where `HEX` is the
/// [`CacheKey`] in hex: a hash of the request and of the credential it is sent with, so the
/// key reveals neither the prompt nor the API key, and two credentials never share an entry.
/// Entries are written with `SET ... PX ttl`: Redis expires them, so the store needs no
/// clean-up, and its `maxmemory-policy` (`allkeys-lru`, say) bounds its size.
///
/// Values larger than [`compress_above`](RedisStore::compress_above) bytes are compressed
/// with lz4 (when that makes them smaller). Every value starts with a format byte; a value of
/// an unknown format (written by a later Volley) reads as a miss.
///
/// Whoever can write to the Redis must not be able to answer for the provider: every value
/// carries a MAC (keyed BLAKE3) over its Redis key and its bytes, under a key derived from
/// the credential of the request (its [`CredentialId`], itself a hash of the API key, the
/// endpoint and any credential header; never stored) and the store's
/// [`secret`](RedisStore::secret). A value that does not authenticate (forged, altered,
/// copied from another key, or written for another credential) is refused with
/// [`RejectedEntry`]: the cache layer counts it and sends the request on. Without an API key
/// the credential is public (a hash of the base URL): set a [`secret`](RedisStore::secret)
/// shared by the processes that may write. Values are authenticated, not encrypted: whoever
/// can read the Redis can read the answers; keep such a Redis private (TLS, `rediss://`, a
/// password, network rules).
///
/// Whoever can write to the Redis can also make a value huge, or put back one that Redis had
/// expired: a read asks for at most [`max_value_bytes`](RedisStore::max_value_bytes) (and one
/// more byte, to tell a longer value), and refuses a longer value like a forged one; an entry
/// older than the store's `ttl` (by the time it was made, which its MAC covers) is a miss.
///
/// The store sends `GETRANGE` and `SET` only: a Redis user restricted by an ACL needs both on
/// the prefix's keys (`~PREFIX:cache:* +getrange +set`). Freshness is judged by the writer's
/// clock, so machines sharing a store need clocks that agree to well within the `ttl`.
///
/// Errors are never fatal: a failed or timed-out read is a miss, a failed `SET` leaves the
/// response unstored, and both are logged by the cache layer. Each command waits at most the
/// connection's response timeout (500 ms by default, see
/// [`RedisOptions::response_timeout`]). The connection reconnects on its own. Cheap to clone;
/// clones share the connection.
///
/// ```no_run
/// use std::time::Duration;
/// use volley_core::cache_key::CredentialId;
/// use volley_middleware::cache::{CacheLayer, RedisStore};
/// use volley_middleware::redis::RedisOptions;
///
/// # async fn run() -> Result<(), volley_core::Error> {
/// let store = RedisStore::connect(
///     RedisOptions::new("redis://127.0.0.1:6379"),
///     Duration::from_secs(86_400),
/// )
/// .await?
/// .prefix("batch-2026")
/// .compress_above(4096);
/// let layer = CacheLayer::new(store, CredentialId::anonymous());
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: RedisConnection,
    prefix: Arc<str>,
    ttl: Duration,
    compress_above: usize,
    max_value_bytes: usize,
    secret: Arc<[u8]>,
    /// Whether a value too long to store was reported (shared by clones).
    warned_too_long: Arc<std::sync::atomic::AtomicBool>,
}

impl RedisStore {
    /// Connects to Redis and keeps entries for `ttl` (at most a century; a zero `ttl` stores
    /// nothing).
    ///
    /// # Errors
    /// As [`RedisConnection::connect`]: `ErrorKind::Config` for a URL that does not parse,
    /// `ErrorKind::Connect` when the server cannot be reached or refuses the credentials.
    pub async fn connect(options: RedisOptions, ttl: Duration) -> Result<RedisStore, Error> {
        let connection = RedisConnection::connect(&options).await?;
        Ok(RedisStore::with_connection(connection, ttl))
    }

    /// A store over an existing connection (shared with a rate limiter, say).
    pub fn with_connection(connection: RedisConnection, ttl: Duration) -> RedisStore {
        RedisStore {
            connection,
            prefix: DEFAULT_PREFIX.into(),
            ttl,
            compress_above: DEFAULT_COMPRESS_ABOVE,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            secret: Arc::new([]),
            warned_too_long: Arc::default(),
        }
    }

    /// A secret mixed into the key every entry is authenticated with, besides the credential:
    /// only processes with the same secret read each other's entries. Needed for entries to be
    /// unforgeable when requests carry no API key (the credential is then a hash of public
    /// facts); harmless otherwise. Never printed.
    ///
    /// Default: none (the credential alone).
    #[must_use]
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> RedisStore {
        self.secret = secret.as_ref().into();
        self
    }

    /// `command`, failed after the connection's command timeout: while Redis is down the
    /// connection may hold a command until it has reconnected, and a request must not wait
    /// for its cache longer than for one command.
    async fn bounded<T>(
        &self,
        what: &str,
        command: impl std::future::Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T, Error> {
        let limit = self.connection.command_timeout();
        match tokio::time::timeout(limit, command).await {
            Ok(result) => result.map_err(|e| self.connection.error(what, &e)),
            Err(_) => Err(Error::new(
                volley_core::ErrorKind::Timeout,
                format!(
                    "{what} (Redis at {}): no answer within {limit:?}",
                    self.connection.server()
                ),
            )),
        }
    }

    /// The MAC key of entries for `credential`.
    fn mac_key(&self, credential: &CredentialId) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_derive_key(MAC_CONTEXT);
        hasher.update(credential.as_bytes());
        hasher.update(&(self.secret.len() as u64).to_le_bytes());
        hasher.update(&self.secret);
        *hasher.finalize().as_bytes()
    }

    /// The first part of every key: `PREFIX:cache:HEX`. Stores with different prefixes never
    /// see each other's entries.
    ///
    /// Default: [`DEFAULT_PREFIX`] (`volley`).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> RedisStore {
        self.prefix = prefix.into().into();
        self
    }

    /// Entries whose encoded size is above this many bytes are compressed with lz4; smaller
    /// ones are stored as they are. `usize::MAX` turns compression off.
    ///
    /// Default: [`DEFAULT_COMPRESS_ABOVE`] (1 KiB).
    #[must_use]
    pub fn compress_above(mut self, bytes: usize) -> RedisStore {
        self.compress_above = bytes;
        self
    }

    /// The largest value read or written, in bytes as stored (compressed, with its envelope).
    ///
    /// A read asks Redis for at most this many bytes and one more (`GETRANGE`), so a value
    /// that someone with write access to the Redis made huge costs that much memory at most;
    /// a longer value is refused ([`RejectedEntry`]) like a forged one. A value longer than
    /// this is not stored. Keep it above the cache layer's
    /// [`max_entry_bytes`](super::CacheLayer::max_entry_bytes) plus a few KiB, or the largest
    /// answers will not be cached.
    ///
    /// Default: [`DEFAULT_MAX_VALUE_BYTES`] (16 MiB).
    #[must_use]
    pub fn max_value_bytes(mut self, bytes: usize) -> RedisStore {
        self.max_value_bytes = bytes;
        self
    }

    /// The Redis key of `key`: `PREFIX:cache:HEX`.
    pub fn redis_key(&self, key: &CacheKey) -> String {
        format!("{}:cache:{key}", self.prefix)
    }

    /// The connection, to share it.
    pub fn connection(&self) -> &RedisConnection {
        &self.connection
    }
}

impl CacheStore for RedisStore {
    /// [`get_for`](CacheStore::get_for) the anonymous credential.
    fn get(&self, key: CacheKey) -> StoreFuture<'_, Option<CachedResponse>> {
        self.get_for(key, &CredentialId::anonymous())
    }

    /// [`put_for`](CacheStore::put_for) the anonymous credential.
    fn put(&self, key: CacheKey, value: CachedResponse) -> StoreFuture<'_, ()> {
        self.put_for(key, &CredentialId::anonymous(), value)
    }

    fn get_for(
        &self,
        key: CacheKey,
        credential: &CredentialId,
    ) -> StoreFuture<'_, Option<CachedResponse>> {
        let mac_key = self.mac_key(credential);
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let redis_key = self.redis_key(&key);
            // At most one byte more than the largest value accepted (the range's end is
            // inclusive; Redis takes no end above i64::MAX).
            let max = self.max_value_bytes.min(i64::MAX as usize - 1);
            let get = ::redis::cmd("GETRANGE")
                .arg(&redis_key)
                .arg(0)
                .arg(max)
                .clone();
            let stored: Vec<u8> = self
                .bounded("reading a cache entry", get.query_async(&mut connection))
                .await?;
            // No such key reads as an empty string; every value has its envelope.
            if stored.is_empty() {
                return Ok(None);
            }
            if stored.len() > max {
                tracing::debug!(
                    max_value_bytes = max,
                    "a cache entry longer than the store accepts; refused"
                );
                return Err(RejectedEntry.into());
            }
            let opened = if stored.len() <= INLINE_BYTES {
                open(&stored, &redis_key, &mac_key, max)?
            } else {
                tokio::task::spawn_blocking(move || open(&stored, &redis_key, &mac_key, max))
                    .await??
            };
            Ok(opened.filter(|entry| {
                let fresh = !outlived(entry.created(), self.ttl, SystemTime::now());
                if !fresh {
                    tracing::debug!(
                        "a cache entry older than the store's ttl (put back after Redis expired \
                         it, or written with a longer ttl); a miss"
                    );
                }
                fresh
            }))
        })
    }

    fn put_for(
        &self,
        key: CacheKey,
        credential: &CredentialId,
        value: CachedResponse,
    ) -> StoreFuture<'_, ()> {
        let mac_key = self.mac_key(credential);
        Box::pin(async move {
            let ttl = self.ttl.min(super::MAX_TTL);
            // Redis refuses `PX 0`; a store that keeps nothing need not ask.
            let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            if millis == 0 {
                return Ok(());
            }
            let threshold = self.compress_above;
            let redis_key = self.redis_key(&key);
            let seal = move |value: &CachedResponse, redis_key: &str| {
                let mut stored = encode(value, threshold);
                stored.mac = Some(mac(&mac_key, redis_key, stored.tag, &stored.bytes));
                stored
            };
            let stored = if value.weight() <= INLINE_BYTES {
                seal(&value, &redis_key)
            } else {
                let redis_key = redis_key.clone();
                tokio::task::spawn_blocking(move || seal(&value, &redis_key)).await?
            };
            // Uncompressed too: a reader accepts no more (a small value that inflates to
            // hundreds of megabytes would cost that much memory per hit).
            if stored.len().max(stored.plain_len) > self.max_value_bytes {
                // Once per store: a cache layer's `max_entry_bytes` above the store's cap stops
                // the largest answers from being cached, which the user should hear of.
                if !self
                    .warned_too_long
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(
                        bytes = stored.len(),
                        max_value_bytes = self.max_value_bytes,
                        "a cache entry longer than the Redis store accepts is not stored (raise \
                         RedisStore::max_value_bytes, or lower the layer's max_entry_bytes); \
                         not said again"
                    );
                }
                return Ok(());
            }
            let mut connection = self.connection.clone();
            let set = ::redis::cmd("SET")
                .arg(&redis_key)
                .arg(&stored)
                .arg("PX")
                .arg(millis)
                .clone();
            self.bounded(
                "storing a cache entry",
                set.query_async::<()>(&mut connection),
            )
            .await?;
            Ok(())
        })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("server", &self.connection.server())
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("compress_above", &self.compress_above)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("secret", &(!self.secret.is_empty()).then_some("***"))
            .finish()
    }
}

/// A stored value: its format byte, then the bytes. Written into the command's buffer in one
/// go, without first copying the two parts together.
struct Stored {
    /// The MAC of the authenticated envelope; `None` writes the bare value (tests only).
    mac: Option<[u8; 32]>,
    tag: u8,
    bytes: Vec<u8>,
    /// The value's length uncompressed.
    plain_len: usize,
}

impl ToRedisArgs for &Stored {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + RedisWrite,
    {
        use std::io::Write as _;
        let mut writer = out.writer_for_next_arg();
        // Writing to the command's in-memory buffer cannot fail.
        if let Some(mac) = &self.mac {
            let _ = writer.write_all(&[TAG_AUTHENTICATED]);
            let _ = writer.write_all(mac);
        }
        let _ = writer.write_all(&[self.tag]);
        let _ = writer.write_all(&self.bytes);
    }
}

impl ToSingleRedisArg for &Stored {}

impl Stored {
    /// The bytes [`write_redis_args`](ToRedisArgs::write_redis_args) writes.
    fn len(&self) -> usize {
        self.mac.map_or(0, |mac| 1 + mac.len()) + 1 + self.bytes.len()
    }
}

/// Whether an entry made at `created` is older than `ttl` (at most [`MAX_TTL`](super::MAX_TTL))
/// at `now`. One made later than `now` (another machine's clock ahead of ours) has not.
fn outlived(created: SystemTime, ttl: Duration, now: SystemTime) -> bool {
    now.duration_since(created)
        .is_ok_and(|age| age > ttl.min(super::MAX_TTL))
}

/// The value to store for `value`: compressed when its encoding is above `threshold` bytes
/// and compression makes it smaller.
fn encode(value: &CachedResponse, threshold: usize) -> Stored {
    let plain = value.encode();
    let plain_len = plain.len();
    if plain.len() > threshold
        && let Ok(len) = u32::try_from(plain.len())
    {
        let mut packed = vec![0; 4 + lz4_flex::block::get_maximum_output_size(plain.len())];
        packed[..4].copy_from_slice(&len.to_le_bytes());
        // The output has room for the worst case, so compressing cannot run out of space.
        if let Ok(n) = lz4_flex::block::compress_into(&plain, &mut packed[4..])
            && 4 + n < plain.len()
        {
            packed.truncate(4 + n);
            return Stored {
                mac: None,
                tag: TAG_LZ4,
                bytes: packed,
                plain_len,
            };
        }
    }
    Stored {
        mac: None,
        tag: TAG_PLAIN,
        bytes: plain,
        plain_len,
    }
}

/// The MAC of a value stored under `redis_key`: keyed BLAKE3 over the key (length-prefixed)
/// and the value's format byte and bytes.
fn mac(mac_key: &[u8; 32], redis_key: &str, tag: u8, bytes: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(mac_key);
    hasher.update(&(redis_key.len() as u64).to_le_bytes());
    hasher.update(redis_key.as_bytes());
    hasher.update(&[tag]);
    hasher.update(bytes);
    *hasher.finalize().as_bytes()
}

/// Checks the MAC of what Redis returned for `redis_key` and decodes the value inside (at
/// most `max` bytes uncompressed). A value without the envelope, or whose MAC does not match,
/// is [`RejectedEntry`]; an envelope of a later format is a miss.
fn open(
    stored: &[u8],
    redis_key: &str,
    mac_key: &[u8; 32],
    max: usize,
) -> Result<Option<CachedResponse>, BoxError> {
    match stored.first() {
        Some(&TAG_AUTHENTICATED) => {}
        Some(&(TAG_PLAIN | TAG_LZ4)) | None => return Err(RejectedEntry.into()),
        Some(_) => return decode(stored, max),
    }
    let Some((claimed, value)) = stored[1..].split_first_chunk::<32>() else {
        return Err(RejectedEntry.into());
    };
    let Some((&tag, bytes)) = value.split_first() else {
        return Err(RejectedEntry.into());
    };
    // `blake3::Hash` compares in constant time.
    if blake3::Hash::from(mac(mac_key, redis_key, tag, bytes)) != blake3::Hash::from(*claimed) {
        return Err(RejectedEntry.into());
    }
    decode(value, max)
}

/// Reads back what [`encode`] stored. An unknown format is a miss; damaged bytes are an error,
/// and so is a value that says it is more than `max` bytes uncompressed: the store writes
/// none (its `max_value_bytes`), and the size is read before anything is allocated, so a
/// damaged or hostile value cannot make it allocate more.
fn decode(stored: &[u8], max: usize) -> Result<Option<CachedResponse>, BoxError> {
    let Some((&tag, rest)) = stored.split_first() else {
        return Err("damaged cache entry: empty".into());
    };
    match tag {
        TAG_PLAIN => Ok(Some(CachedResponse::decode(rest)?)),
        TAG_LZ4 => {
            let Some((len, block)) = rest.split_first_chunk::<4>() else {
                return Err("damaged cache entry: truncated".into());
            };
            let len = u32::from_le_bytes(*len) as usize;
            if len > max {
                // Refused as a value longer than the cap is (and as a forged one): counted as
                // rejected, not as a store failure.
                tracing::debug!(
                    bytes = len,
                    max_value_bytes = max,
                    "a cache entry longer uncompressed than the store accepts; refused"
                );
                return Err(RejectedEntry.into());
            }
            let mut plain = vec![0; len];
            let n = lz4_flex::block::decompress_into(block, &mut plain)?;
            if n != len {
                return Err("damaged cache entry: wrong uncompressed length".into());
            }
            Ok(Some(CachedResponse::decode(&plain)?))
        }
        other => {
            tracing::debug!(
                format = other,
                "cache entry of an unknown format (a later version wrote it?); a miss"
            );
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, StatusCode};

    fn entry(body: Vec<u8>) -> CachedResponse {
        CachedResponse::new(StatusCode::OK, &HeaderMap::new(), body.into(), false)
    }

    /// Equal but for the creation time, which is stored to the millisecond.
    fn same(a: Option<CachedResponse>, b: &CachedResponse) -> bool {
        a.is_some_and(|a| {
            a.status() == b.status()
                && a.headers() == b.headers()
                && a.body() == b.body()
                && a.is_stream() == b.is_stream()
        })
    }

    #[test]
    fn an_entry_outlives_the_ttl_by_its_age_alone() {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        assert!(!outlived(now, hour, now));
        assert!(
            !outlived(now - hour, hour, now),
            "exactly the ttl is still fresh"
        );
        assert!(outlived(now - hour - Duration::from_millis(1), hour, now));
        // Made on a machine whose clock is ahead: not old.
        assert!(!outlived(now + hour, Duration::ZERO, now));
        // A ttl above the longest kept counts as that.
        let century = crate::cache::MAX_TTL;
        assert!(outlived(now - century - hour, Duration::MAX, now));
    }

    #[test]
    fn a_stored_values_length_is_what_is_written() {
        let mut stored = encode(&entry(vec![7; 100]), usize::MAX);
        assert_eq!(stored.len(), stored_bytes(&stored).len());
        stored.mac = Some([0; 32]);
        assert_eq!(stored.len(), 1 + 32 + stored_bytes(&stored).len());
    }

    fn stored_bytes(stored: &Stored) -> Vec<u8> {
        let mut bytes = vec![stored.tag];
        bytes.extend_from_slice(&stored.bytes);
        bytes
    }

    /// The store's default cap, as readers apply it.
    const MAX: usize = DEFAULT_MAX_VALUE_BYTES;

    #[test]
    fn small_entries_are_stored_plain_and_large_ones_compressed() {
        let small = entry(b"{}".to_vec());
        let stored = encode(&small, 1024);
        assert_eq!(stored.tag, TAG_PLAIN);
        assert!(same(decode(&stored_bytes(&stored), MAX).unwrap(), &small));

        let large = entry(b"hello ".repeat(1000));
        let stored = encode(&large, 1024);
        assert_eq!(stored.tag, TAG_LZ4);
        assert!(stored.bytes.len() < 1000, "{}", stored.bytes.len());
        assert!(same(decode(&stored_bytes(&stored), MAX).unwrap(), &large));

        // Off: stored as it is, whatever its size.
        assert_eq!(encode(&large, usize::MAX).tag, TAG_PLAIN);
    }

    #[test]
    fn incompressible_entries_stay_plain() {
        // A xorshift sequence: lz4 finds nothing to share in it.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let stored = encode(&entry(noise), 16);
        assert_eq!(stored.tag, TAG_PLAIN);
    }

    #[test]
    fn only_entries_sealed_for_the_same_key_and_credential_open() {
        let alice = [1u8; 32];
        let mallory = [2u8; 32];
        let value = entry(b"{\"answer\":42}".to_vec());
        let mut stored = encode(&value, 1024);
        stored.mac = Some(mac(&alice, "p:cache:aa", stored.tag, &stored.bytes));
        let sealed = sealed_bytes(&stored);
        assert!(same(
            open(&sealed, "p:cache:aa", &alice, MAX).unwrap(),
            &value
        ));
        let rejected = |result: Result<Option<CachedResponse>, BoxError>| {
            result.is_err_and(|e| e.is::<RejectedEntry>())
        };
        // Another credential, another key, a bare value, a flipped bit, a cut MAC.
        assert!(rejected(open(&sealed, "p:cache:aa", &mallory, MAX)));
        assert!(rejected(open(&sealed, "p:cache:bb", &alice, MAX)));
        assert!(rejected(open(
            &stored_bytes(&stored),
            "p:cache:aa",
            &alice,
            MAX
        )));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(rejected(open(&flipped, "p:cache:aa", &alice, MAX)));
        assert!(rejected(open(&sealed[..20], "p:cache:aa", &alice, MAX)));
        assert!(rejected(open(&[], "p:cache:aa", &alice, MAX)));
        // An envelope of a later format is a miss.
        assert_eq!(open(&[9, 1, 2], "p:cache:aa", &alice, MAX).unwrap(), None);
    }

    fn sealed_bytes(stored: &Stored) -> Vec<u8> {
        let mut bytes = vec![TAG_AUTHENTICATED];
        bytes.extend_from_slice(&stored.mac.expect("sealed"));
        bytes.extend_from_slice(&stored_bytes(stored));
        bytes
    }

    #[test]
    fn unknown_formats_are_misses_and_damage_is_an_error() {
        let mut bytes = stored_bytes(&encode(&entry(b"hello ".repeat(1000)), 16));
        assert!(decode(&[], MAX).is_err());
        for cut in [1, 3, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut], MAX).is_err(), "cut at {cut}");
        }
        // A length past what the store accepts is refused before anything is allocated: a
        // small value may claim a large one, and be one (lz4 packs 6 000 bytes of `hello ` into
        // a few dozen).
        assert!(decode(&bytes, MAX).is_ok());
        let err = decode(&bytes, 1_000).unwrap_err();
        assert!(err.is::<RejectedEntry>(), "{err}");
        bytes[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&bytes, MAX).is_err());
        bytes[0] = 7;
        assert_eq!(decode(&bytes, MAX).unwrap(), None);
        assert_eq!(decode(&[0xff], MAX).unwrap(), None);
    }
}
