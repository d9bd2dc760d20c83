//! A transport read from the environment (`Builder::from_env`) that found no key fails to
//! build for OpenAI's or Anthropic's own API, as the official SDKs refuse to start, rather
//! than answer every request with a 401; any other server may need none. One test in its own
//! binary: it changes the variables before anything reads them.

use volley_core::ErrorKind;
use volley_transport::{Provider, Transport};

#[test]
fn from_env_without_a_key_is_refused_only_for_the_official_apis() {
    // SAFETY: the only test of this binary, and no other thread runs: nothing reads the
    // environment while it changes.
    unsafe {
        for name in [
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "ANTHROPIC_BASE_URL",
        ] {
            std::env::remove_var(name);
        }
    }
    let err = Transport::builder().from_env().build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("OPENAI_API_KEY"), "{err}");
    assert!(err.to_string().contains("api.openai.com"), "{err}");
    let err = Transport::builder()
        .provider(Provider::Anthropic)
        .from_env()
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("ANTHROPIC_API_KEY"), "{err}");

    // Any other server (on this machine, a gateway that adds the key), a key given to the
    // builder, or a credential header: built.
    for other in [
        "http://127.0.0.1:8000/v1",
        "http://localhost:11434/v1",
        "https://gateway.example/v1",
    ] {
        Transport::builder()
            .from_env()
            .base_url(other)
            .build()
            .unwrap();
    }
    Transport::builder()
        .from_env()
        .default_header(
            http::HeaderName::from_static("api-key"),
            http::HeaderValue::from_static("by-hand"),
        )
        .build()
        .unwrap();
    Transport::builder()
        .from_env()
        .api_key("sk-given")
        .build()
        .unwrap();
    Transport::builder()
        .from_env()
        .default_header(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer sk-by-hand"),
        )
        .build()
        .unwrap();
    // Without from_env, nothing is required: a gateway may add the key.
    Transport::builder().build().unwrap();

    // SAFETY: as above.
    unsafe { std::env::set_var("OPENAI_API_KEY", "sk-from-env") };
    Transport::builder().from_env().build().unwrap();
}
