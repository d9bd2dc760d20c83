//! The one URL redactor: how every crate shows a URL that may carry a secret (a proxy or Redis
//! password, an `api-key` in a query) in a message, a log line or `--print-config`.
//!
//! [`redact_url`] writes `scheme://***@host:port/path?***`: the whole user information
//! (user name and password) and the whole query and fragment are replaced by `***`; the
//! scheme, host, port and path stay, so the reader still sees where it points.
//! [`redact_url_in`] does the same to a URL quoted inside a longer text (a library's error
//! message), and also removes the secrets where they appear on their own.
//!
//! Passwords are often typed unencoded, and base64 or generated ones hold `/`, `@`, `?` or
//! `#`. So the user information is taken to end at the **last** `@` of the URL, and the host
//! starts after it; the path begins at the first `/`, and the query at the first `?` or `#`,
//! after that `@`. An `@` in a path or query therefore hides too much (everything before it),
//! never too little: a secret is never shown as the host or the path.
//!
//! ```
//! use volley_core::redact::redact_url;
//!
//! assert_eq!(redact_url("http://user:s3cret@proxy:3128"), "http://***@proxy:3128");
//! assert_eq!(redact_url("rediss://:p@ss/w?rd#1@cache:6380/0"), "rediss://***@cache:6380/0");
//! assert_eq!(
//!     redact_url("https://x.openai.azure.com/openai?api-key=sk-1"),
//!     "https://x.openai.azure.com/openai?***"
//! );
//! assert_eq!(redact_url("https://api.openai.com/v1"), "https://api.openai.com/v1");
//! ```

/// A request path (with perhaps a query) as a message shows it: quoted, its query (which may
/// carry a key, `?api-key=...`) and fragment replaced by `***`.
///
/// ```
/// use volley_core::redact::quoted_path;
///
/// assert_eq!(quoted_path("/models?api-key=sk-1"), "\"/models?***\"");
/// assert_eq!(quoted_path("/chat/completions"), "\"/chat/completions\"");
/// ```
pub fn quoted_path(path: &str) -> String {
    match path.find(['?', '#']) {
        Some(at) => format!("\"{}{}***\"", path[..at].escape_debug(), &path[at..at + 1]),
        None => format!("{path:?}"),
    }
}

/// `url` without its secrets: the user information (if any) becomes `***@`, a query becomes
/// `?***` and a fragment `#***`; the scheme, host, port and path are kept. A text without
/// `scheme://` is read as `[userinfo@]host[/path][?query]`. Pure: no parsing failure, no I/O.
pub fn redact_url(url: &str) -> String {
    let parts = UrlParts::of(url);
    let mut out = String::with_capacity(url.len());
    out.push_str(parts.scheme);
    if parts.userinfo.is_some() {
        out.push_str("***@");
    }
    out.push_str(parts.location);
    if let Some((marker, rest)) = parts.tail {
        out.push(marker);
        if !rest.is_empty() {
            out.push_str("***");
        }
    }
    out
}

/// `text` with every occurrence of `url` replaced by [`redact_url`]`(url)`, and the URL's
/// secrets (its password, or its whole user information when there is no `:`, and its query
/// and fragment) replaced by `***` wherever else they appear, for error messages of
/// libraries that quote the URL (or parts of it) they were given.
pub fn redact_url_in(text: &str, url: &str) -> String {
    if url.is_empty() {
        return text.to_owned();
    }
    let parts = UrlParts::of(url);
    let mut text = text.replace(url, &redact_url(url));
    let password = parts
        .userinfo
        .map(|info| info.split_once(':').map_or(info, |(_, password)| password));
    let query = parts.tail.map(|(_, rest)| rest);
    for secret in [parts.userinfo, password, query].into_iter().flatten() {
        if !secret.is_empty() {
            text = text.replace(secret, "***");
        }
    }
    text
}

/// A URL cut where [`redact_url`] cuts it.
struct UrlParts<'a> {
    /// `"scheme://"`, or empty.
    scheme: &'a str,
    /// Everything between the scheme and the last `@`.
    userinfo: Option<&'a str>,
    /// Host, port and path.
    location: &'a str,
    /// `'?'` or `'#'` and what follows it.
    tail: Option<(char, &'a str)>,
}

impl<'a> UrlParts<'a> {
    fn of(url: &'a str) -> Self {
        let (scheme, rest) = match url.find("://") {
            Some(end) if is_scheme(&url[..end]) => url.split_at(end + 3),
            _ => ("", url),
        };
        let (userinfo, after) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        // The authority holds no `?` or `#`, so the first of them after the user information
        // starts the query or fragment, whether or not a path came before it.
        let (location, tail) = match after.find(['?', '#']) {
            Some(at) => {
                let marker = if after.as_bytes()[at] == b'?' {
                    '?'
                } else {
                    '#'
                };
                (&after[..at], Some((marker, &after[at + 1..])))
            }
            None => (after, None),
        };
        UrlParts {
            scheme,
            userinfo,
            location,
            tail,
        }
    }
}

/// RFC 3986: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Secrets shorter than this are not scrubbed: replacing every `1` of a body helps nobody.
const MIN_SECRET_LEN: usize = 4;

/// Adds to `out` the byte strings to scrub for one credential value: the value, and its token
/// when it starts with a scheme (`Bearer sk-1` gives `sk-1`); each once, none shorter than 4
/// bytes.
pub fn secrets_of(value: &[u8], out: &mut Vec<bytes::Bytes>) {
    let mut push = |s: &[u8]| {
        let s = s.trim_ascii();
        if s.len() >= MIN_SECRET_LEN && !out.iter().any(|o| o.as_ref() == s) {
            out.push(bytes::Bytes::copy_from_slice(s));
        }
    };
    push(value);
    if let Some(at) = value.iter().position(|b| *b == b' ') {
        push(&value[at + 1..]);
    }
}

/// The secrets a request carries in its own headers (a tenant's `Authorization`, any header
/// named like a credential or marked sensitive; see
/// [`is_credential_header`](crate::headers::is_credential_header)), as [`secrets_of`] gives
/// them. Empty, without allocating, for a request without headers of its own.
pub fn request_secrets(headers: &http::HeaderMap) -> Vec<bytes::Bytes> {
    let mut out = Vec::new();
    for (name, value) in headers {
        if crate::headers::is_credential_header(name) || value.is_sensitive() {
            secrets_of(value.as_bytes(), &mut out);
        }
    }
    out
}

/// `body` with every occurrence of each of `secrets` replaced by `***`, the longer secrets
/// first (a token is never half-replaced by a shorter one inside it). The same bytes,
/// uncopied, when none occurs.
///
/// ```
/// use bytes::Bytes;
/// use volley_core::redact::scrub_secrets;
///
/// let body = Bytes::from_static(b"key sk-abcdef revoked (sk-abc)");
/// let secrets = [Bytes::from_static(b"sk-abc"), Bytes::from_static(b"sk-abcdef")];
/// assert_eq!(scrub_secrets(body, secrets.iter()), "key *** revoked (***)");
/// ```
pub fn scrub_secrets<'a>(
    mut body: bytes::Bytes,
    secrets: impl IntoIterator<Item = &'a bytes::Bytes>,
) -> bytes::Bytes {
    let mut secrets: Vec<&[u8]> = secrets.into_iter().map(|s| s.as_ref()).collect();
    secrets.sort_unstable_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in secrets {
        body = scrub_one(body, secret);
    }
    body
}

/// [`scrub_secrets`] for a body that was cut short (a bounded read of an error body): a
/// secret the cut split leaves its first bytes at the very end, which no search for the
/// whole secret finds; those bytes go too. A body that ends in the first bytes of a secret by
/// chance loses them: a cut body lost its end anyway.
///
/// ```
/// use bytes::Bytes;
/// use volley_core::redact::scrub_secrets_cut;
///
/// let cut = Bytes::from_static(b"invalid key sk-abc sent as sk-ab");
/// let secrets = [Bytes::from_static(b"sk-abcdef")];
/// assert_eq!(scrub_secrets_cut(cut, secrets.iter()), "invalid key sk-abc sent as ");
/// ```
pub fn scrub_secrets_cut<'a>(
    body: bytes::Bytes,
    secrets: impl IntoIterator<Item = &'a bytes::Bytes> + Clone,
) -> bytes::Bytes {
    let mut body = scrub_secrets(body, secrets.clone());
    // The longest head of any secret the body ends with.
    let head = secrets
        .into_iter()
        .filter_map(|secret| {
            (1..secret.len())
                .rev()
                .find(|&len| body.ends_with(&secret[..len]))
        })
        .max()
        .unwrap_or(0);
    body.truncate(body.len() - head);
    body
}

/// `body` with every occurrence of `secret` replaced by `***` (the same bytes, unchanged and
/// uncopied, when there is none).
fn scrub_one(body: bytes::Bytes, secret: &[u8]) -> bytes::Bytes {
    if secret.is_empty() || memchr::memmem::find(&body, secret).is_none() {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest = &body[..];
    while let Some(at) = memchr::memmem::find(rest, secret) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(b"***");
        rest = &rest[at + secret.len()..];
    }
    out.extend_from_slice(rest);
    bytes::Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn urls_without_secrets_are_unchanged() {
        for url in [
            "https://api.openai.com/v1",
            "http://127.0.0.1:8080",
            "http://[::1]:8080/v1/chat/completions",
            "redis://127.0.0.1:6379/2",
            "redis+unix:///tmp/redis.sock",
            "proxy.example:3128",
            "not a url",
            "",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn user_information_is_hidden_whole() {
        for (url, shown) in [
            ("http://user:s3cret@proxy:3128", "http://***@proxy:3128"),
            (
                "redis://:hunter2@127.0.0.1:6379/0",
                "redis://***@127.0.0.1:6379/0",
            ),
            (
                "rediss://user:hunter2@cache.example:6380",
                "rediss://***@cache.example:6380",
            ),
            (
                "https://ghp_token@github.example/",
                "https://***@github.example/",
            ),
            ("http://u:p@[::1]:8080/v1", "http://***@[::1]:8080/v1"),
            ("http://u:p%40x@proxy:3128", "http://***@proxy:3128"),
            ("u:p@proxy:3128", "***@proxy:3128"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn passwords_with_url_delimiters_are_hidden() {
        // Base64 passwords hold `/`, `+` and `=`; generated ones `?`, `#` or `@`.
        for password in [
            "Ab3/x+Yz=",
            "a?b",
            "a#b",
            "a@b",
            "p@ss/w?rd#1",
            "//@@??##",
            "a:b",
        ] {
            for (url, shown) in [
                (
                    format!("rediss://default:{password}@cache.example:6380/1"),
                    "rediss://***@cache.example:6380/1",
                ),
                (
                    format!("http://user:{password}@proxy:3128"),
                    "http://***@proxy:3128",
                ),
                (
                    format!("http://user:{password}@proxy:3128?x=1"),
                    "http://***@proxy:3128?***",
                ),
            ] {
                assert_eq!(redact_url(&url), shown, "{url}");
            }
        }
    }

    #[test]
    fn queries_and_fragments_are_masked() {
        for (url, shown) in [
            (
                "https://x.openai.azure.com/openai?api-version=2024-06-01&api-key=sk-1",
                "https://x.openai.azure.com/openai?***",
            ),
            (
                "redis://127.0.0.1:6379/2?password=hunter2",
                "redis://127.0.0.1:6379/2?***",
            ),
            ("https://host?key=1", "https://host?***"),
            ("https://host/v1#token=1", "https://host/v1#***"),
            ("https://host/v1?a=1#b", "https://host/v1?***"),
            ("https://host/v1?", "https://host/v1?"),
            (
                "redis+unix:///tmp/r.sock?pass=x",
                "redis+unix:///tmp/r.sock?***",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn an_at_sign_after_the_host_hides_too_much_never_too_little() {
        // Read as a password `secret@host/v1?a=b` at host `c`: nothing secret can leak.
        assert_eq!(
            redact_url("https://u:secret@host/v1?a=b@c"),
            "https://***@c"
        );
        assert_eq!(
            redact_url("https://host/v1?email=a@b.example"),
            "https://***@b.example"
        );
    }

    #[test]
    fn secrets_are_removed_from_texts_quoting_the_url() {
        let url = "rediss://default:p@ss/w?rd@cache:6380/0?x=tok";
        let text = format!("cannot connect to {url}: auth with p@ss/w?rd failed (x=tok)");
        let shown = redact_url_in(&text, url);
        assert_eq!(
            shown,
            "cannot connect to rediss://***@cache:6380/0?***: auth with *** failed (***)"
        );
        let token = redact_url_in("token ghp_1 refused", "https://ghp_1@host");
        assert_eq!(token, "token *** refused");
        assert_eq!(redact_url_in("plain", ""), "plain");
        assert_eq!(
            redact_url_in("failed: http://proxy:3128", "http://proxy:3128"),
            "failed: http://proxy:3128"
        );
    }

    proptest! {
        #[test]
        fn no_password_or_query_survives(
            password in "[A-WYZ0-9/@?#:%+=]{0,24}",
            query in "[A-WYZ0-9=&@?#/]{0,24}",
        ) {
            // The secrets are marked with an `X`, and nothing else of the URL has one.
            let url = format!("s://u:X{password}@h:1/p?X{query}");
            prop_assert!(!redact_url(&url).contains('X'));
            // With an `@` in the query the password is read as running up to it (hiding more
            // of the URL), so the secrets quoted alone are other strings.
            if !query.contains('@') {
                prop_assert_eq!(redact_url(&url), "s://***@h:1/p?***");
                let text = redact_url_in(&format!("{url} X{password} X{query}"), &url);
                prop_assert!(!text.contains('X'), "{}", text);
            }
        }

        #[test]
        fn never_panics(url in ".{0,60}", text in ".{0,60}") {
            let _ = redact_url(&url);
            let _ = redact_url_in(&text, &url);
        }
    }
}
