//! Azure OpenAI's wire conventions, as the official SDK's `AzureOpenAI` client sends them:
//! the exact request lines and headers (seen by a loopback server that records them), and
//! whole exchanges with volley-mock, which answers Azure's URL shapes.

mod common;

use common::*;
use volley_core::{ErrorKind, Request};
use volley_mock::MockConfig;
use volley_transport::{Provider, Transport};

const KEY: &str = "azure-key-0123456789abcdef";
const TOKEN: &str = "eyJ0eXAi.entra-token.0123456789";

fn chat_for(model: &str) -> Request {
    Request::post(
        "/chat/completions",
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#),
    )
    .unwrap()
}

#[tokio::test]
async fn deployment_urls_carry_the_version_and_the_key_as_api_key() {
    let (origin, heads) = recorder().await;
    let transport = Transport::builder()
        .provider(Provider::Azure)
        .base_url(format!("{origin}/openai/deployments/prod-4o"))
        .api_key(KEY)
        .api_version("2024-10-21")
        .build()
        .unwrap();
    transport.send(chat_for("ignored")).await.unwrap();
    transport
        .send(Request::post("/embeddings?user=1", r#"{"input":"x"}"#).unwrap())
        .await
        .unwrap();
    let heads = heads.lock().unwrap().clone();
    assert!(
        heads[0].starts_with(
            "post /openai/deployments/prod-4o/chat/completions?api-version=2024-10-21 http/1.1"
        ),
        "{}",
        heads[0]
    );
    assert!(
        heads[1].starts_with(
            "post /openai/deployments/prod-4o/embeddings?user=1&api-version=2024-10-21 http/1.1"
        ),
        "{}",
        heads[1]
    );
    assert_eq!(
        header(&heads[0], "api-key"),
        Some(KEY.to_lowercase().as_str())
    );
    assert_eq!(header(&heads[0], "authorization"), None);
}

#[tokio::test]
async fn an_endpoint_routes_each_request_to_the_deployment_its_model_names() {
    let (origin, heads) = recorder().await;
    let transport = Transport::builder()
        .provider(Provider::Azure)
        .azure_endpoint(format!("{origin}/"))
        .azure_ad_token(TOKEN)
        .api_version("2025-04-01-preview")
        .build()
        .unwrap();
    assert_eq!(transport.base_url(), format!("{origin}/openai"));
    transport.send(chat_for("gpt-4o-batch")).await.unwrap();
    transport
        .send(Request::get("/models").unwrap())
        .await
        .unwrap();
    let heads = heads.lock().unwrap().clone();
    assert!(
        heads[0].starts_with(
            "post /openai/deployments/gpt-4o-batch/chat/completions?api-version=2025-04-01-preview "
        ),
        "{}",
        heads[0]
    );
    assert!(
        heads[1].starts_with("get /openai/models?api-version=2025-04-01-preview "),
        "{}",
        heads[1]
    );
    // The Entra ID token is a bearer token; no api-key.
    let bearer = format!("bearer {}", TOKEN.to_lowercase());
    assert_eq!(header(&heads[0], "authorization"), Some(bearer.as_str()));
    assert_eq!(header(&heads[0], "api-key"), None);

    // With a deployment, the endpoint makes the deployment URL.
    let transport = Transport::builder()
        .provider(Provider::Azure)
        .azure_endpoint(&origin)
        .azure_deployment("prod")
        .api_key(KEY)
        .api_version("2024-10-21")
        .build()
        .unwrap();
    assert_eq!(
        transport.base_url(),
        format!("{origin}/openai/deployments/prod")
    );
}

#[tokio::test]
async fn the_v1_api_keeps_the_model_in_the_body_and_needs_no_version() {
    let (origin, heads) = recorder().await;
    let transport = Transport::builder()
        .provider(Provider::Azure)
        .base_url(format!("{origin}/openai/v1"))
        .api_key(KEY)
        .build()
        .unwrap();
    transport.send(chat_for("gpt-4o")).await.unwrap();
    let heads = heads.lock().unwrap().clone();
    assert!(
        heads[0].starts_with("post /openai/v1/chat/completions http/1.1"),
        "{}",
        heads[0]
    );
    assert!(header(&heads[0], "api-key").is_some());
}

#[test]
fn azure_settings_that_cannot_work_fail_the_build() {
    let azure = || {
        Transport::builder()
            .provider(Provider::Azure)
            .base_url("https://res.openai.azure.com/openai/deployments/d")
    };
    let cases = [
        (
            azure()
                .api_key(KEY)
                .azure_ad_token(TOKEN)
                .api_version("2024-10-21"),
            "one of them",
        ),
        (azure().api_version("2024-10-21"), "AZURE_OPENAI_API_KEY"),
        (azure().api_key(KEY), "OPENAI_API_VERSION"),
        (
            azure()
                .azure_endpoint("https://res.openai.azure.com")
                .api_key(KEY)
                .api_version("2024-10-21"),
            "both set",
        ),
        (Transport::builder().azure_ad_token(TOKEN), "not azure"),
    ];
    for (builder, says) in cases {
        let debug = format!("{builder:?}");
        assert!(!debug.contains(KEY) && !debug.contains(TOKEN), "{debug}");
        let err = builder.build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let text = format!("{err} {err:?}");
        assert!(text.contains(says), "{text}");
        assert!(!text.contains(KEY) && !text.contains(TOKEN), "{text}");
    }
}

#[tokio::test]
async fn volley_mock_answers_azure_shapes_and_refuses_a_wrong_key_without_echoing_it() {
    let server = mock(MockConfig {
        require_api_key: Some(KEY.to_owned()),
        ..MockConfig::default()
    })
    .await;
    let origin = format!("http://{}", server.addr());
    let transport = Transport::builder()
        .provider(Provider::Azure)
        .azure_endpoint(&origin)
        .api_key(KEY)
        .api_version("2024-10-21")
        .build()
        .unwrap();
    let response = transport.send(chat_for("gpt-4o-mini")).await.unwrap();
    assert_eq!(response.status(), 200);
    let v1 = Transport::builder()
        .provider(Provider::Azure)
        .base_url(format!("{origin}/openai/v1"))
        .api_key(KEY)
        .build()
        .unwrap();
    v1.send(chat()).await.unwrap();

    // The mock refuses a deployment URL without api-version, as Azure does: what the
    // transport adds is needed.
    let openai_style = Transport::builder()
        .base_url(format!("{origin}/openai/deployments/d"))
        .api_key(KEY)
        .build()
        .unwrap();
    let err = openai_style.send(chat()).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404), "{err}");

    let wrong = Transport::builder()
        .provider(Provider::Azure)
        .azure_endpoint(&origin)
        .api_key("azure-wrong-key-42")
        .api_version("2024-10-21")
        .build()
        .unwrap();
    let err = wrong.send(chat()).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
    let text = format!("{err} {err:?} {:?} {wrong:?}", err.headers());
    assert!(!text.contains("azure-wrong-key-42"), "{text}");
    assert_eq!(server.stats().requests_total, 4);
}
