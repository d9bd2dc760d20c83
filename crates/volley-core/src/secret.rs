//! Credentials that never print.

use std::fmt;

/// An API key. `Debug` and `Display` print `***`; the key is only readable through
/// [`ApiKey::expose`], which the transport calls once to build its `Authorization` header.
///
/// ```
/// use volley_core::ApiKey;
///
/// let key = ApiKey::new("sk-live-123");
/// assert_eq!(format!("{key:?}"), "ApiKey(***)");
/// assert_eq!(key.to_string(), "***");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Box<str>);

impl ApiKey {
    /// Wraps a key. Surrounding white space (a trailing newline from a file) is trimmed.
    pub fn new(key: impl AsRef<str>) -> ApiKey {
        ApiKey(key.as_ref().trim().into())
    }

    /// The key itself. Never log or format what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the key is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> ApiKey {
        ApiKey::new(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> ApiKey {
        ApiKey::new(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_key() {
        let key = ApiKey::new(" sk-very-secret\n");
        assert_eq!(key.expose(), "sk-very-secret");
        assert!(!format!("{key:?} {key} {key:#?}").contains("very-secret"));
    }
}
