//! Byte encodings: base64 for embeddings, gzip for response bodies.

use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends the standard (padded) base64 of `input`.
pub(crate) fn base64(out: &mut Vec<u8>, input: &[u8]) {
    out.reserve(input.len().div_ceil(3) * 4);
    let mut chunks = input.chunks_exact(3);
    for c in &mut chunks {
        let n = u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(c[2]);
        out.extend_from_slice(&[
            ALPHABET[(n >> 18) as usize & 63],
            ALPHABET[(n >> 12) as usize & 63],
            ALPHABET[(n >> 6) as usize & 63],
            ALPHABET[n as usize & 63],
        ]);
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend_from_slice(&[
                ALPHABET[(n >> 18) as usize & 63],
                ALPHABET[(n >> 12) as usize & 63],
                b'=',
                b'=',
            ]);
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            out.extend_from_slice(&[
                ALPHABET[(n >> 18) as usize & 63],
                ALPHABET[(n >> 12) as usize & 63],
                ALPHABET[(n >> 6) as usize & 63],
                b'=',
            ]);
        }
        _ => {}
    }
}

/// Appends the base64 of the little-endian bytes of `values`, as OpenAI encodes embeddings.
pub(crate) fn base64_f32_le(out: &mut Vec<u8>, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64(out, &bytes);
}

/// Gzips a (small) response body. The fast level: the mock must not become CPU-bound.
pub(crate) fn gzip(input: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(input.len() / 2 + 32),
        Compression::fast(),
    );
    // Writing into a `Vec` cannot fail, so neither can the encoder.
    encoder
        .write_all(input)
        .expect("gzip into a Vec cannot fail");
    encoder.finish().expect("gzip into a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn b64(input: &[u8]) -> String {
        let mut out = Vec::new();
        base64(&mut out, input);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(input.as_bytes()), expected);
        }
        assert_eq!(b64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn base64_of_floats_is_little_endian() {
        let mut out = Vec::new();
        base64_f32_le(&mut out, &[1.0]);
        // 1.0f32 = 0x3f800000, little-endian 00 00 80 3f.
        assert_eq!(out, b"AACAPw==");
    }

    #[test]
    fn gzip_round_trips() {
        let input = br#"{"object":"list","data":[]}"#.repeat(10);
        let compressed = gzip(&input);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, input);
    }
}
