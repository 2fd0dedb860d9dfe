//! The real binary: start-up, graceful shutdown on SIGTERM, and what its logs never contain.

mod support;

use std::time::Duration;

use sha2::{Digest, Sha256};
use support::otlp::{Protocol, Receiver};
use support::*;
use tiktok_auth0_proxy::sandbox::Fault;

async fn readyz_status(proxy: &ProxyProcess) -> Option<u16> {
    let response = http().get(proxy.admin_url("/readyz")).send().await.ok()?;
    Some(response.status().as_u16())
}

#[tokio::test]
async fn sigterm_drains_then_finishes_the_request_in_flight() {
    let sandbox = TestSandbox::start().await;
    let config = config_file(
        &sandbox,
        "shutdown:\n  drain_delay: 1s\n  grace_period: 10s\n",
    );
    let mut proxy = ProxyProcess::start(&[
        ("TIKTOK_AUTH0_PROXY_CONFIG", config.display().to_string()),
        ("TIKTOK_AUTH0_PROXY_TIKTOK__TIMEOUT", "10s".to_owned()),
    ])
    .await;
    eventually("ready", || async {
        readyz_status(&proxy).await == Some(200)
    })
    .await;

    // TikTok takes 2s, well within the proxy's 10s timeout; SIGTERM arrives meanwhile.
    sandbox
        .sandbox
        .inject_fault(Fault::Slow(Duration::from_secs(2)), 1);
    let code = sandbox.code(APP_A_KEY);
    let url = proxy.url("/token");
    let in_flight =
        tokio::spawn(
            async move { post_form(&url, &code_form(APP_A_KEY, APP_A_SECRET, &code)).await },
        );
    eventually("the request to reach TikTok", || async {
        !sandbox.sandbox.token_requests().is_empty()
    })
    .await;

    proxy.terminate();
    eventually("readiness to drop", || async {
        readyz_status(&proxy).await == Some(503)
    })
    .await;
    let liveness = http().get(proxy.admin_url("/livez")).send().await.unwrap();
    assert_eq!(
        liveness.status(),
        200,
        "liveness does not depend on draining"
    );

    let answer = in_flight.await.unwrap();
    assert_eq!(
        answer.status, 200,
        "the request in flight finishes: {answer:?}"
    );

    let status = tokio::time::timeout(DEADLINE, proxy.child.wait())
        .await
        .expect("the proxy exits after draining")
        .unwrap();
    assert!(status.success(), "{status:?}\n{}", proxy.log());
    assert!(proxy.log().contains("shutting down"), "{}", proxy.log());
    let _ = std::fs::remove_file(config);
}

#[tokio::test]
async fn a_bad_setting_stops_start_up_naming_the_key() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tiktok-auth0-proxy"))
        .arg("serve")
        .env("TIKTOK_CLIENT_KEY", "k")
        .env("TIKTOK_CLIENT_SECRET", "s")
        .env("TIKTOK_AUTH0_PROXY_TIKTOK__TIMEOUT", "soon")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tiktok.timeout"), "{stderr}");
    assert!(
        stderr.contains("TIKTOK_AUTH0_PROXY_TIKTOK__TIMEOUT"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_config_masks_secrets() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tiktok-auth0-proxy"))
        .arg("check-config")
        .env("TIKTOK_CLIENT_KEY", "visible-client-key")
        .env("TIKTOK_CLIENT_SECRET", "hidden-client-secret")
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("visible-client-key"), "{stdout}");
    assert!(
        stdout.contains("https://open.tiktokapis.com/v2/oauth/token/"),
        "{stdout}"
    );
    assert!(!stdout.contains("hidden-client-secret"), "{stdout}");
}

/// Runs every path of the token endpoint with recognisable values, then searches the whole
/// log, at debug level, for any of them.
#[tokio::test]
async fn no_secret_code_verifier_or_token_reaches_the_logs_or_the_spans() {
    let sandbox = TestSandbox::start().await;
    let (receiver, receiver_addr) = Receiver::start(Protocol::HttpProtobuf).await;
    let config = config_file(&sandbox, "");
    let mut proxy = ProxyProcess::start(&[
        ("TIKTOK_AUTH0_PROXY_CONFIG", config.display().to_string()),
        ("RUST_LOG", "debug,tiktok_auth0_proxy=trace".to_owned()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{receiver_addr}"),
        ),
    ])
    .await;
    let url = proxy.url("/token");
    let mut secrets: Vec<String> = [
        APP_A_SECRET,
        APP_B_SECRET,
        APP_B_AUTH0_SECRET,
        "WRONG-SECRET-5b1e9d",
    ]
    .map(str::to_owned)
    .to_vec();

    // Success with PKCE, then a refresh, then a reused refresh token.
    let verifier = "VERIFIER-3f6a0c-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let code = sandbox.code_with_challenge(
        APP_B_KEY,
        Some(hex::encode(Sha256::digest(verifier.as_bytes()))),
    );
    let mut form = code_form(APP_B_KEY, APP_B_AUTH0_SECRET, &code);
    form.push(("code_verifier", verifier));
    let issued = post_form(&url, &form).await;
    assert_eq!(issued.status, 200, "{issued:?}");
    let refresh_token = issued.body["refresh_token"].as_str().unwrap().to_owned();
    secrets.extend([code, verifier.to_owned(), refresh_token.clone()]);
    secrets.push(issued.body["access_token"].as_str().unwrap().to_owned());
    for _ in 0..2 {
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", APP_B_KEY),
            ("client_secret", APP_B_AUTH0_SECRET),
            ("refresh_token", refresh_token.as_str()),
        ];
        let answer = post_form(&url, &form).await;
        if let Some(token) = answer.body["access_token"].as_str() {
            secrets.push(token.to_owned());
            secrets.push(answer.body["refresh_token"].as_str().unwrap().to_owned());
        }
    }

    // The proxy's own refusals, with secrets in the request.
    let code = sandbox.code(APP_A_KEY);
    secrets.push(code.clone());
    for form in [
        code_form(APP_A_KEY, "WRONG-SECRET-5b1e9d", &code),
        code_form("unknown-app", APP_A_SECRET, &code),
        vec![
            ("client_id", APP_A_KEY),
            ("client_secret", APP_A_SECRET),
            ("code", &code),
        ],
        vec![
            ("grant_type", "password"),
            ("client_id", APP_A_KEY),
            ("client_secret", APP_A_SECRET),
        ],
    ] {
        post_form(&url, &form).await;
    }

    // Every kind of TikTok failure, each with a fresh code.
    let faults = [
        Fault::OAuthError {
            status: 200,
            error: "invalid_grant".into(),
            description: "x".into(),
        },
        Fault::OAuthError {
            status: 401,
            error: "invalid_client".into(),
            description: "y".into(),
        },
        Fault::RateLimited { status: 429 },
        Fault::Html500,
        Fault::Garbage,
        Fault::Truncated,
        Fault::Oversized(256 * 1024),
        Fault::Reset,
        Fault::Slow(Duration::from_secs(3)),
    ];
    for fault in faults {
        sandbox.sandbox.inject_fault(fault, 1);
        let code = sandbox.code(APP_A_KEY);
        let answer = post_form(&url, &code_form(APP_A_KEY, APP_A_SECRET, &code)).await;
        assert!(answer.status >= 400, "{answer:?}");
        secrets.push(code);
    }

    // Stopping flushes every span to the receiver.
    proxy.stop().await;
    let spans = format!("{:?}", receiver.spans());
    // 16 requests, 12 of which reached TikTok: a server span each, and a client span per call.
    let count = receiver.spans().len();
    assert!(count >= 28, "{count} spans");
    for secret in &secrets {
        assert!(
            !spans.contains(secret.as_str()),
            "a span carries `{secret}`"
        );
    }

    let log = proxy.log();
    assert!(
        log.matches("token request").count() >= 15,
        "one line per request:\n{log}"
    );
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the log contains `{secret}`:\n{log}"
        );
    }
    let _ = std::fs::remove_file(config);
}

#[tokio::test]
async fn each_token_request_logs_one_line_with_its_facts() {
    let sandbox = TestSandbox::start().await;
    let config = config_file(&sandbox, "");
    let proxy =
        ProxyProcess::start(&[("TIKTOK_AUTH0_PROXY_CONFIG", config.display().to_string())]).await;

    sandbox.next_token_answer_is_error(200, "invalid_grant");
    let code = sandbox.code(APP_A_KEY);
    let answer = post_form(
        &proxy.url("/token"),
        &code_form(APP_A_KEY, APP_A_SECRET, &code),
    )
    .await;
    answer.assert_error(400, "invalid_grant");

    let mut line = None;
    eventually("the request's log line", || {
        line = proxy
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|event| event["message"] == "token request");
        std::future::ready(line.is_some())
    })
    .await;
    let line = line.unwrap();
    assert_eq!(line["app"], APP_A_KEY);
    assert_eq!(line["grant_type"], "authorization_code");
    assert_eq!(line["outcome"], "tiktok_error");
    assert_eq!(line["tiktok_error"], "invalid_grant");
    assert_eq!(line["log_id"], answer.body["log_id"]);
    assert_eq!(line["level"], "INFO");
    assert!(line["latency_ms"].as_f64().is_some());
    let _ = std::fs::remove_file(config);
}
