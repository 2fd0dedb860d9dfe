//! The token endpoint over loopback: the real router against the TikTok sandbox.

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};
use support::*;
use tiktok_auth0_proxy::apps::Registry;
use tiktok_auth0_proxy::sandbox::Fault;

async fn start() -> (TestSandbox, TestProxy) {
    let sandbox = TestSandbox::start().await;
    let proxy = TestProxy::start(settings_for(&sandbox)).await;
    (sandbox, proxy)
}

/// The value of `name` in a form body, decoded once, as TikTok reads it.
fn form_value(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn form_names(body: &[u8]) -> Vec<String> {
    form_urlencoded::parse(body)
        .map(|(key, _)| key.into_owned())
        .collect()
}

#[tokio::test]
async fn a_code_is_exchanged_for_tiktok_tokens() {
    let (sandbox, proxy) = start().await;
    let code = sandbox.code(APP_A_KEY);
    assert!(
        code.contains('*') && code.contains('!') && code.contains('.'),
        "{code}"
    );

    let answer = post_form(
        &proxy.url("/token"),
        &code_form(APP_A_KEY, APP_A_SECRET, &code),
    )
    .await;

    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        answer.body["access_token"]
            .as_str()
            .unwrap()
            .starts_with("act.")
    );
    assert!(
        answer.body["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("rft.")
    );
    assert_eq!(answer.body["token_type"], "Bearer");
    assert_eq!(answer.body["expires_in"], 86400);
    assert!(answer.body["open_id"].is_string());
    assert_eq!(answer.body["scope"], "user.info.basic,user.info.profile");
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(answer.header("pragma"), Some("no-cache"));

    let requests = sandbox.sandbox.token_requests();
    assert_eq!(requests.len(), 1);
    let body = &requests[0].body;
    assert_eq!(form_value(body, "client_key").as_deref(), Some(APP_A_KEY));
    assert_eq!(
        form_value(body, "client_secret").as_deref(),
        Some(APP_A_SECRET)
    );
    assert_eq!(
        form_value(body, "grant_type").as_deref(),
        Some("authorization_code")
    );
    assert_eq!(
        form_value(body, "code"),
        Some(code),
        "the code reaches TikTok byte-exact"
    );
    assert_eq!(
        form_value(body, "redirect_uri").as_deref(),
        Some(REDIRECT_URI)
    );
    assert!(!form_names(body).contains(&"client_id".to_owned()));
}

#[tokio::test]
async fn the_older_proxy_path_answers_too() {
    let (sandbox, proxy) = start().await;
    let code = sandbox.code(APP_A_KEY);
    let url = proxy.url("/proxy/token");
    let answer = post_form(&url, &code_form(APP_A_KEY, APP_A_SECRET, &code)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test]
async fn the_pkce_verifier_is_forwarded() {
    let (sandbox, proxy) = start().await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk~.";
    let challenge = hex::encode(Sha256::digest(verifier.as_bytes()));
    let code = sandbox.code_with_challenge(APP_A_KEY, Some(challenge));

    let mut form = code_form(APP_A_KEY, APP_A_SECRET, &code);
    form.push(("code_verifier", verifier));
    let answer = post_form(&proxy.url("/token"), &form).await;

    assert_eq!(answer.status, 200, "{answer:?}");
    let body = &sandbox.sandbox.token_requests()[0].body;
    assert_eq!(form_value(body, "code_verifier").as_deref(), Some(verifier));
}

#[tokio::test]
async fn parameters_the_grant_does_not_define_are_not_forwarded() {
    let (sandbox, proxy) = start().await;
    let code = sandbox.code(APP_A_KEY);
    let mut form = code_form(APP_A_KEY, APP_A_SECRET, &code);
    form.push(("state", "xyz"));
    form.push(("scope", "openid"));
    let answer = post_form(&proxy.url("/token"), &form).await;

    assert_eq!(answer.status, 200, "{answer:?}");
    let mut names = form_names(&sandbox.sandbox.token_requests()[0].body);
    names.sort();
    let expected = [
        "client_key",
        "client_secret",
        "code",
        "grant_type",
        "redirect_uri",
    ];
    assert_eq!(names, expected);
}

#[tokio::test]
async fn a_refresh_token_is_exchanged_and_rotated() {
    let (sandbox, proxy) = start().await;
    let code = sandbox.code(APP_A_KEY);
    let first = post_form(
        &proxy.url("/token"),
        &code_form(APP_A_KEY, APP_A_SECRET, &code),
    )
    .await;
    let refresh_token = first.body["refresh_token"].as_str().unwrap().to_owned();

    let url = proxy.url("/token");
    let refresh = |token: String| {
        let url = url.clone();
        async move {
            let form = [
                ("grant_type", "refresh_token"),
                ("client_id", APP_A_KEY),
                ("client_secret", APP_A_SECRET),
                ("refresh_token", token.as_str()),
            ];
            post_form(&url, &form).await
        }
    };
    let second = refresh(refresh_token.clone()).await;
    assert_eq!(second.status, 200, "{second:?}");
    let rotated = second.body["refresh_token"].as_str().unwrap();
    assert_ne!(rotated, refresh_token);

    let body = &sandbox.sandbox.token_requests()[1].body;
    let mut names = form_names(body);
    names.sort();
    assert_eq!(
        names,
        ["client_key", "client_secret", "grant_type", "refresh_token"]
    );
    assert_eq!(
        form_value(body, "refresh_token"),
        Some(refresh_token.clone())
    );

    let reused = refresh(refresh_token).await;
    reused.assert_error(400, "invalid_grant");
    assert!(
        reused.body["log_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{reused:?}"
    );
}

#[tokio::test]
async fn json_bodies_and_basic_credentials_are_accepted() {
    let (sandbox, proxy) = start().await;

    let code = sandbox.code(APP_A_KEY);
    let json = serde_json::json!({
        "grant_type": "authorization_code",
        "client_id": APP_A_KEY,
        "client_secret": APP_A_SECRET,
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "extra": {"ignored": [1, true]},
    });
    let response = http()
        .post(proxy.url("/token"))
        .json(&json)
        .send()
        .await
        .unwrap();
    let answer = Answer::read(response).await;
    assert_eq!(answer.status, 200, "{answer:?}");

    // RFC 6749 2.3.1: form-encode id and secret, then Basic-encode; `~` and `/` get encoded.
    let code = sandbox.code(APP_B_KEY);
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{APP_B_KEY}:{}", APP_B_AUTH0_SECRET));
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
    ];
    let response = http()
        .post(proxy.url("/token"))
        .header("authorization", format!("Basic {basic}"))
        .form(&form)
        .send()
        .await
        .unwrap();
    let answer = Answer::read(response).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let body = &sandbox.sandbox.token_requests()[1].body;
    assert_eq!(
        form_value(body, "client_secret").as_deref(),
        Some(APP_B_SECRET)
    );
}

#[tokio::test]
async fn two_apps_are_served_side_by_side() {
    let (sandbox, proxy) = start().await;

    let code_a = sandbox.code(APP_A_KEY);
    let code_b = sandbox.code(APP_B_KEY);
    let a = post_form(
        &proxy.url("/token"),
        &code_form(APP_A_KEY, APP_A_SECRET, &code_a),
    )
    .await;
    let b_form = code_form(APP_B_KEY, APP_B_AUTH0_SECRET, &code_b);
    let b = post_form(&proxy.url("/token"), &b_form).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(b.status, 200, "{b:?}");
    assert_ne!(a.body["open_id"], b.body["open_id"], "open_id is per app");

    let requests = sandbox.sandbox.token_requests();
    assert_eq!(
        form_value(&requests[1].body, "client_key").as_deref(),
        Some(APP_B_KEY)
    );
    assert_eq!(
        form_value(&requests[1].body, "client_secret").as_deref(),
        Some(APP_B_SECRET)
    );

    // App B's TikTok secret is not what Auth0 must present for it.
    let code_b = sandbox.code(APP_B_KEY);
    let wrong = post_form(
        &proxy.url("/token"),
        &code_form(APP_B_KEY, APP_B_SECRET, &code_b),
    )
    .await;
    wrong.assert_error(401, "invalid_client");
}

/// Every refusal the proxy makes on its own, with status and code; none reaches TikTok.
#[tokio::test]
async fn requests_that_fail_the_proxy_checks_never_reach_tiktok() {
    let (sandbox, proxy) = start().await;
    let url = proxy.url("/token");
    let code = sandbox.code(APP_A_KEY);
    let valid = code_form(APP_A_KEY, APP_A_SECRET, &code);
    let without = |name: &str| -> Vec<(&str, &str)> {
        valid
            .iter()
            .copied()
            .filter(|(key, _)| *key != name)
            .collect()
    };
    let with = |name: &'static str, value: &'static str| -> Vec<(&str, &str)> {
        let mut form = valid.clone();
        form.retain(|(key, _)| *key != name);
        form.push((name, value));
        form
    };

    type Form<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(&str, Form, u16, &str)> = vec![
        (
            "no redirect_uri",
            without("redirect_uri"),
            400,
            "invalid_request",
        ),
        ("no code", without("code"), 400, "invalid_request"),
        ("empty code", with("code", ""), 400, "invalid_request"),
        (
            "no grant_type",
            without("grant_type"),
            400,
            "invalid_request",
        ),
        (
            "other grant",
            with("grant_type", "password"),
            400,
            "unsupported_grant_type",
        ),
        ("no client_id", without("client_id"), 401, "invalid_client"),
        (
            "no client_secret",
            without("client_secret"),
            401,
            "invalid_client",
        ),
        (
            "unknown client",
            with("client_id", "nobody"),
            401,
            "invalid_client",
        ),
        (
            "wrong secret",
            with("client_secret", "guess"),
            401,
            "invalid_client",
        ),
        (
            "client checked before grant",
            {
                let mut form = with("client_secret", "guess");
                form.retain(|(key, _)| *key != "grant_type");
                form
            },
            401,
            "invalid_client",
        ),
    ];
    for (case, form, status, error) in cases {
        let answer = post_form(&url, &form).await;
        assert_eq!(answer.status, status, "{case}: {answer:?}");
        answer.assert_error(status, error);
    }

    let mut repeated = valid.clone();
    repeated.push(("code", "again"));
    post_form(&url, &repeated)
        .await
        .assert_error(400, "invalid_request");

    let send_raw = |content_type: &'static str, body: Vec<u8>| {
        let url = url.clone();
        async move {
            let request = http()
                .post(&url)
                .header("content-type", content_type)
                .body(body);
            Answer::read(request.send().await.unwrap()).await
        }
    };
    send_raw("text/plain", b"grant_type=authorization_code".to_vec())
        .await
        .assert_error(400, "invalid_request");
    send_raw("application/json", b"{\"grant_type\":".to_vec())
        .await
        .assert_error(400, "invalid_request");
    send_raw("application/x-www-form-urlencoded", b"code=%ff%fe".to_vec())
        .await
        .assert_error(400, "invalid_request");
    let oversized = format!("code={}", "a".repeat(64 * 1024)).into_bytes();
    send_raw("application/x-www-form-urlencoded", oversized)
        .await
        .assert_error(413, "invalid_request");

    let get = Answer::read(http().get(&url).send().await.unwrap()).await;
    get.assert_error(405, "invalid_request");
    assert_eq!(get.header("allow"), Some("POST"));
    let unknown = Answer::read(
        http()
            .post(proxy.url("/v2/oauth/token/"))
            .send()
            .await
            .unwrap(),
    );
    unknown.await.assert_error(404, "invalid_request");

    assert!(
        sandbox.sandbox.token_requests().is_empty(),
        "nothing reached TikTok"
    );
}

#[tokio::test]
async fn an_oversized_body_without_content_length_is_refused() {
    let (_sandbox, proxy) = start().await;
    let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(vec![b'a'; 1024]));
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let response = http()
        .post(proxy.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    Answer::read(response)
        .await
        .assert_error(413, "invalid_request");
}

#[tokio::test]
async fn basic_and_body_credentials_that_disagree_are_refused() {
    let (sandbox, proxy) = start().await;
    let code = sandbox.code(APP_A_KEY);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{APP_B_KEY}:x"));
    let response = http()
        .post(proxy.url("/token"))
        .header("authorization", format!("Basic {basic}"))
        .form(&code_form(APP_A_KEY, APP_A_SECRET, &code))
        .send()
        .await
        .unwrap();
    Answer::read(response)
        .await
        .assert_error(400, "invalid_request");

    let response = http()
        .post(proxy.url("/token"))
        .header("authorization", "Basic !!!")
        .form(&code_form(APP_A_KEY, APP_A_SECRET, &code))
        .send()
        .await
        .unwrap();
    let answer = Answer::read(response).await;
    answer.assert_error(401, "invalid_client");
    assert!(
        answer
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );
}

/// Each way TikTok can fail, and the answer Auth0 gets for it.
#[tokio::test]
async fn tiktok_failures_become_rfc6749_errors() {
    let (sandbox, proxy) = start().await;
    let oauth = |status: u16, error: &str| Fault::OAuthError {
        status,
        error: error.into(),
        description: format!("sandbox says {error}"),
    };
    let cases: Vec<(&str, Fault, u16, &str)> = vec![
        (
            "error with 200",
            oauth(200, "invalid_grant"),
            400,
            "invalid_grant",
        ),
        (
            "error with 400",
            oauth(400, "invalid_request"),
            400,
            "invalid_request",
        ),
        (
            "error with 401",
            oauth(401, "access_denied"),
            400,
            "access_denied",
        ),
        (
            "unknown category",
            oauth(400, "brand_new_error"),
            400,
            "brand_new_error",
        ),
        (
            "tiktok unavailable",
            oauth(503, "temporarily_unavailable"),
            503,
            "temporarily_unavailable",
        ),
        (
            "tiktok server error",
            oauth(500, "server_error"),
            502,
            "server_error",
        ),
        (
            "rate limit 429",
            Fault::RateLimited { status: 429 },
            503,
            "temporarily_unavailable",
        ),
        (
            "rate limit 200",
            Fault::RateLimited { status: 200 },
            503,
            "temporarily_unavailable",
        ),
        ("html 500", Fault::Html500, 502, "server_error"),
        ("garbage", Fault::Garbage, 502, "server_error"),
        ("cut short", Fault::Truncated, 502, "server_error"),
        (
            "oversized",
            Fault::Oversized(1024 * 1024),
            502,
            "server_error",
        ),
        ("reset", Fault::Reset, 502, "server_error"),
        (
            "too slow",
            Fault::Slow(Duration::from_secs(5)),
            504,
            "temporarily_unavailable",
        ),
    ];
    for (case, fault, status, error) in cases {
        sandbox.sandbox.inject_fault(fault, 1);
        let code = sandbox.code(APP_A_KEY);
        let form = code_form(APP_A_KEY, APP_A_SECRET, &code);
        let answer = post_form(&proxy.url("/token"), &form).await;
        assert_eq!(answer.status, status, "{case}: {answer:?}");
        answer.assert_error(status, error);

        let needs_log_id = !matches!(case, "reset" | "too slow");
        if needs_log_id {
            let log_id = answer.body["log_id"].as_str().unwrap_or_default();
            assert!(
                !log_id.is_empty(),
                "{case}: every answer after TikTok's keeps its log_id"
            );
        }
        if case.starts_with("rate limit") {
            let retry_after: u64 = answer.header("retry-after").unwrap().parse().unwrap();
            assert!(retry_after >= 1, "{case}");
        }
        if case.starts_with("error with") || case == "unknown category" {
            let description = answer.body["error_description"].as_str().unwrap();
            assert!(
                description.contains("sandbox says"),
                "{case}: TikTok's reason is kept"
            );
        }
    }
}

#[tokio::test]
async fn tiktok_rejecting_the_proxy_credentials_says_so() {
    let sandbox = TestSandbox::start().await;
    let mut settings = settings_for(&sandbox);
    settings.credentials.apps = vec![app(APP_A_KEY, "stale-tiktok-secret", Some("auth0-side"))];
    let proxy = TestProxy::start(settings).await;

    let code = sandbox.code(APP_A_KEY);
    let answer = post_form(
        &proxy.url("/token"),
        &code_form(APP_A_KEY, "auth0-side", &code),
    )
    .await;
    answer.assert_error(401, "invalid_client");
    let description = answer.body["error_description"].as_str().unwrap();
    assert!(description.contains("the proxy holds"), "{description}");
    assert!(answer.body["log_id"].is_string());
}

#[tokio::test]
async fn tiktok_unreachable_is_a_bad_gateway() {
    let sandbox = TestSandbox::start().await;
    let mut settings = settings_for(&sandbox);
    // A port that was free a moment ago: nothing listens there now.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    settings.tiktok.token_url = format!("http://{closed}/v2/oauth/token/").parse().unwrap();
    let proxy = TestProxy::start(settings).await;

    let answer = post_form(
        &proxy.url("/token"),
        &code_form(APP_A_KEY, APP_A_SECRET, "c"),
    )
    .await;
    answer.assert_error(502, "server_error");
}

#[tokio::test]
async fn no_app_loaded_yet_is_temporarily_unavailable() {
    let sandbox = TestSandbox::start().await;
    let registry = Arc::new(Registry::new(["secret/tiktok-app".to_owned()]));
    let proxy = TestProxy::start_with_registry(settings_for(&sandbox), registry).await;

    let answer = post_form(
        &proxy.url("/token"),
        &code_form(APP_A_KEY, APP_A_SECRET, "c"),
    )
    .await;
    answer.assert_error(503, "temporarily_unavailable");
    assert!(answer.header("retry-after").is_some());

    let ready = http().get(proxy.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let report: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(report["not_synced"][0], "secret/tiktok-app");
}
