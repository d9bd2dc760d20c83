//! The byte layout of a [`CachedResponse`], for stores that keep bytes.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use volley_core::BoxError;

use super::store::{CachedResponse, unix_millis};

// Layout of `encode`: magic, flags (bit 0: stream), status (u16), created (u64 milliseconds
// since the Unix epoch), header count (u16), each header as name length (u16), name, value
// length (u32), value, then the body length (u64) and the body. Integers are little-endian.
const MAGIC: &[u8; 4] = b"VLC1";

impl CachedResponse {
    /// The entry as bytes, for stores that keep bytes.
    pub fn encode(&self) -> Vec<u8> {
        let headers_len: usize = self
            .headers
            .iter()
            .map(|(n, v)| 6 + n.as_str().len() + v.len())
            .sum();
        let mut out = Vec::with_capacity(27 + headers_len + self.body.len());
        out.extend_from_slice(MAGIC);
        out.push(u8::from(self.stream));
        out.extend_from_slice(&self.status.as_u16().to_le_bytes());
        out.extend_from_slice(&unix_millis(self.created).to_le_bytes());
        out.extend_from_slice(&(self.headers.len() as u16).to_le_bytes());
        for (name, value) in &self.headers {
            out.extend_from_slice(&(name.as_str().len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(&(self.body.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// Reads back what [`encode`](Self::encode) wrote. Damaged or foreign bytes are an error,
    /// never a panic.
    pub fn decode(bytes: &[u8]) -> Result<CachedResponse, BoxError> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(DecodeError("not a Volley cache entry").into());
        }
        let stream = match r.take(1)?[0] {
            0 => false,
            1 => true,
            _ => return Err(DecodeError("unknown flags").into()),
        };
        let status = StatusCode::from_u16(r.u16()?).map_err(|_| DecodeError("bad status"))?;
        // `+` would panic where a damaged time does not fit the platform's `SystemTime`.
        let created = UNIX_EPOCH
            .checked_add(Duration::from_millis(r.u64()?))
            .ok_or(DecodeError("bad creation time"))?;
        let mut headers = HeaderMap::new();
        for _ in 0..r.u16()? {
            let len = r.u16()? as usize;
            let name =
                HeaderName::from_bytes(r.take(len)?).map_err(|_| DecodeError("bad header name"))?;
            let len = r.u32()? as usize;
            let value = HeaderValue::from_bytes(r.take(len)?)
                .map_err(|_| DecodeError("bad header value"))?;
            headers.append(name, value);
        }
        let len = usize::try_from(r.u64()?).map_err(|_| DecodeError("body too long"))?;
        let body = Bytes::copy_from_slice(r.take(len)?);
        if !r.0.is_empty() {
            return Err(DecodeError("trailing bytes").into());
        }
        Ok(CachedResponse {
            status,
            headers,
            body,
            created,
            stream,
        })
    }
}

#[derive(Debug)]
struct DecodeError(&'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "damaged cache entry: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}
