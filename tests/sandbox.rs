//! The TikTok sandbox over loopback: it must behave like TikTok's v2 API (PROTOCOL.md) and
//! misbehave exactly as told.

use std::error::Error as _;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tiktok_auth0_proxy::sandbox::{CodeGrant, Fault, Sandbox, SandboxApp, SandboxError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const APP_KEY: &str = "sbxtestappone";
const APP_SECRET: &str = "sbx-secret-one-5e1f";
const OTHER_KEY: &str = "sbxtestapptwo";
const OTHER_SECRET: &str = "sbx-secret-two-a07c";
const REDIRECT: &str = "https://tenant.example.auth0.com/login/callback";
const OTHER_REDIRECT: &str = "https://other.example.test/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// A sandbox served on a loopback port; stops when dropped.
struct Running {
    sandbox: Sandbox,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    async fn start() -> Running {
        let sandbox = Sandbox::new(vec![
            SandboxApp {
                client_key: APP_KEY.into(),
                client_secret: APP_SECRET.into(),
                redirect_uris: vec![REDIRECT.into(), OTHER_REDIRECT.into()],
            },
            SandboxApp {
                client_key: OTHER_KEY.into(),
                client_secret: OTHER_SECRET.into(),
                redirect_uris: vec![OTHER_REDIRECT.into()],
            },
        ]);
        // Bound before serving starts, so the port accepts at once: no readiness wait needed.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = sandbox.clone();
        let served = tokio::spawn(async move {
            server
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
        });
        Running {
            sandbox,
            addr,
            stop: Some(stop),
            served: Some(served),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn code(&self, scope: &str, challenge: Option<String>) -> String {
        self.sandbox
            .mint_code(CodeGrant {
                client_key: APP_KEY.into(),
                redirect_uri: REDIRECT.into(),
                scope: scope.into(),
                code_challenge: challenge,
            })
            .unwrap()
    }

    async fn post_token(&self, fields: &[(&str, &str)]) -> reqwest::Response {
        let body = encode(fields);
        self.post_raw("/v2/oauth/token/", body).await
    }

    async fn post_raw(&self, path: &str, body: String) -> reqwest::Response {
        client()
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn exchange(&self, code: &str) -> reqwest::Response {
        self.post_token(&code_fields(code)).await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn encode(fields: &[(&str, &str)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (name, value) in fields {
        form.append_pair(name, value);
    }
    form.finish()
}

fn code_fields(code: &str) -> Vec<(&str, &str)> {
    vec![
        ("client_key", APP_KEY),
        ("client_secret", APP_SECRET),
        ("code", code),
        ("grant_type", "authorization_code"),
        ("redirect_uri", REDIRECT),
    ]
}

fn challenge_of(verifier: &str) -> String {
    hex::encode(Sha256::digest(verifier.as_bytes()))
}

/// Status, the `x-tt-logid` header and the JSON body.
async fn answer(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let log_id = header(&response, "x-tt-logid");
    let body = response.bytes().await.unwrap();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("not json: {}", String::from_utf8_lossy(&body)));
    (status, log_id, json)
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Asserts TikTok's flat error shape, with the body's log id equal to the header's.
async fn assert_error(response: reqwest::Response, status: u16, error: &str) -> Value {
    let (got_status, log_id, body) = answer(response).await;
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(got_status, status, "{body}");
    assert!(!log_id.is_empty());
    assert_eq!(body["log_id"], log_id.as_str());
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    body
}

fn io_error_kind(error: &reqwest::Error) -> Option<io::ErrorKind> {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(io_error) = cause.downcast_ref::<io::Error>() {
            return Some(io_error.kind());
        }
        source = cause.source();
    }
    None
}

#[tokio::test]
async fn code_exchange_answers_like_tiktok() {
    let sandbox = Running::start().await;
    let code = sandbox.code("user.info.basic,user.info.profile", None);
    assert!(
        code.contains('*') && code.contains('!') && code.contains('.'),
        "{code}"
    );

    let (status, log_id, body) = answer(sandbox.exchange(&code).await).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(log_id.len(), 34);
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let expected = [
        "access_token",
        "expires_in",
        "open_id",
        "refresh_expires_in",
        "refresh_token",
        "scope",
        "token_type",
    ];
    assert_eq!(keys, expected);
    assert!(body["access_token"].as_str().unwrap().starts_with("act."));
    assert!(body["refresh_token"].as_str().unwrap().starts_with("rft."));
    assert_eq!(body["expires_in"], 86_400);
    assert_eq!(body["refresh_expires_in"], 31_536_000);
    assert_eq!(body["scope"], "user.info.basic,user.info.profile");
    assert_eq!(body["token_type"], "Bearer");
    assert!(!body["open_id"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn a_code_is_single_use() {
    let sandbox = Running::start().await;
    let code = sandbox.code("user.info.basic", None);

    assert_eq!(sandbox.exchange(&code).await.status(), 200);

    assert_error(sandbox.exchange(&code).await, 400, "invalid_grant").await;
}

#[tokio::test]
async fn redirect_uri_must_repeat_the_one_the_code_was_minted_with() {
    let sandbox = Running::start().await;
    let code = sandbox.code("user.info.basic", None);
    let mut fields = code_fields(&code);
    fields[4] = ("redirect_uri", OTHER_REDIRECT);

    assert_error(sandbox.post_token(&fields).await, 400, "invalid_grant").await;

    let code = sandbox.code("user.info.basic", None);
    let mut fields = code_fields(&code);
    fields.remove(4);
    assert_error(sandbox.post_token(&fields).await, 400, "invalid_request").await;
}

#[tokio::test]
async fn pkce_verifier_must_hash_to_the_hex_challenge() {
    let sandbox = Running::start().await;

    let code = sandbox.code("user.info.basic", Some(challenge_of(VERIFIER)));
    let mut fields = code_fields(&code);
    fields.push(("code_verifier", VERIFIER));
    assert_eq!(sandbox.post_token(&fields).await.status(), 200);

    let code = sandbox.code("user.info.basic", Some(challenge_of(VERIFIER)));
    let mut fields = code_fields(&code);
    fields.push((
        "code_verifier",
        "another-verifier-of-forty-three-characters-x",
    ));
    assert_error(sandbox.post_token(&fields).await, 400, "invalid_grant").await;

    let code = sandbox.code("user.info.basic", Some(challenge_of(VERIFIER)));
    assert_error(sandbox.exchange(&code).await, 400, "invalid_request").await;
}

#[tokio::test]
async fn refresh_rotates_the_refresh_token() {
    let sandbox = Running::start().await;
    let (_, _, first) = answer(
        sandbox
            .exchange(&sandbox.code("user.info.basic", None))
            .await,
    )
    .await;
    let first_refresh = first["refresh_token"].as_str().unwrap();
    let refresh = |token: &str| {
        encode(&[
            ("client_key", APP_KEY),
            ("client_secret", APP_SECRET),
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
        ])
    };

    let (status, _, second) = answer(
        sandbox
            .post_raw("/v2/oauth/token/", refresh(first_refresh))
            .await,
    )
    .await;

    assert_eq!(status, 200, "{second}");
    let second_refresh = second["refresh_token"].as_str().unwrap();
    assert_ne!(second_refresh, first_refresh);
    assert_ne!(second["access_token"], first["access_token"]);
    assert_eq!(second["open_id"], first["open_id"]);
    assert_eq!(second["scope"], "user.info.basic");
    let old = sandbox
        .post_raw("/v2/oauth/token/", refresh(first_refresh))
        .await;
    assert_error(old, 400, "invalid_grant").await;
    let new = sandbox
        .post_raw("/v2/oauth/token/", refresh(second_refresh))
        .await;
    assert_eq!(new.status(), 200);
}

#[tokio::test]
async fn client_credentials_are_checked() {
    let sandbox = Running::start().await;
    let code = sandbox.code("user.info.basic", None);

    let mut fields = code_fields(&code);
    fields[1] = ("client_secret", OTHER_SECRET);
    assert_error(sandbox.post_token(&fields).await, 400, "invalid_client").await;

    let mut fields = code_fields(&code);
    fields[0] = ("client_key", "nosuchapp");
    assert_error(sandbox.post_token(&fields).await, 400, "invalid_client").await;

    // `client_id` is Auth0's name, not TikTok's.
    let mut fields = code_fields(&code);
    fields[0] = ("client_id", APP_KEY);
    assert_error(sandbox.post_token(&fields).await, 400, "invalid_request").await;

    // Another app cannot redeem the code, and its attempt does not burn it.
    let mut fields = code_fields(&code);
    fields[0] = ("client_key", OTHER_KEY);
    fields[1] = ("client_secret", OTHER_SECRET);
    assert_error(sandbox.post_token(&fields).await, 400, "invalid_grant").await;
    assert_eq!(sandbox.exchange(&code).await.status(), 200);
}

#[tokio::test]
async fn malformed_token_requests_are_invalid_requests() {
    let sandbox = Running::start().await;
    let code = sandbox.code("user.info.basic", None);

    let json = client()
        .post(sandbox.url("/v2/oauth/token/"))
        .json(&serde_json::json!({ "client_key": APP_KEY, "code": code }))
        .send()
        .await
        .unwrap();
    assert_error(json, 400, "invalid_request").await;

    let repeated = format!("{}&code=again", encode(&code_fields(&code)));
    let repeated = sandbox.post_raw("/v2/oauth/token/", repeated).await;
    assert_error(repeated, 400, "invalid_request").await;

    let mut fields = code_fields(&code);
    fields[3] = ("grant_type", "client_credentials");
    assert_error(
        sandbox.post_token(&fields).await,
        400,
        "unsupported_grant_type",
    )
    .await;

    let get = client()
        .get(sandbox.url("/v2/oauth/token/"))
        .send()
        .await
        .unwrap();
    assert_error(get, 405, "invalid_request").await;

    // None of those touched the code.
    assert_eq!(sandbox.exchange(&code).await.status(), 200);
}

#[tokio::test]
async fn token_path_without_trailing_slash_is_a_cdn_404() {
    let sandbox = Running::start().await;
    let code = sandbox.code("user.info.basic", None);

    let response = sandbox
        .post_raw("/v2/oauth/token", encode(&code_fields(&code)))
        .await;

    assert_eq!(response.status(), 404);
    assert!(header(&response, "content-type").starts_with("text/html"));
    assert!(!header(&response, "x-tt-logid").is_empty());
    assert!(response.text().await.unwrap().contains("404 Not Found"));
    assert!(sandbox.sandbox.token_requests().is_empty());
}

#[tokio::test]
async fn open_id_is_stable_per_app_and_user() {
    let sandbox = Running::start().await;
    let (_, _, first) = answer(
        sandbox
            .exchange(&sandbox.code("user.info.basic", None))
            .await,
    )
    .await;
    let (_, _, again) = answer(
        sandbox
            .exchange(&sandbox.code("user.info.basic", None))
            .await,
    )
    .await;
    let other_code = sandbox
        .sandbox
        .mint_code(CodeGrant {
            client_key: OTHER_KEY.into(),
            redirect_uri: OTHER_REDIRECT.into(),
            scope: "user.info.basic".into(),
            code_challenge: None,
        })
        .unwrap();
    let other_fields = [
        ("client_key", OTHER_KEY),
        ("client_secret", OTHER_SECRET),
        ("code", other_code.as_str()),
        ("grant_type", "authorization_code"),
        ("redirect_uri", OTHER_REDIRECT),
    ];
    let (status, _, other) = answer(sandbox.post_token(&other_fields).await).await;

    assert_eq!(status, 200, "{other}");
    assert_eq!(first["open_id"], again["open_id"]);
    assert_ne!(first["open_id"], other["open_id"]);
}

#[tokio::test]
async fn recorded_requests_keep_raw_bytes_and_values_decode_once() {
    let sandbox = Running::start().await;
    let code = sandbox.code("user.info.basic", None);
    let escaped = code.replace('*', "%2A").replace('!', "%21");
    let body = format!(
        "client_key={APP_KEY}&client_secret={APP_SECRET}&code={escaped}\
         &grant_type=authorization_code&redirect_uri={}",
        encode(&[("r", REDIRECT)]).trim_start_matches("r=")
    );
    // Encoded twice, the code must not match: the sandbox decodes exactly once.
    let twice = body.replace("%2A", "%252A");

    let rejected = sandbox.post_raw("/v2/oauth/token/", twice.clone()).await;
    let accepted = sandbox.post_raw("/v2/oauth/token/", body.clone()).await;

    assert_error(rejected, 400, "invalid_grant").await;
    assert_eq!(accepted.status(), 200);
    let recorded = sandbox.sandbox.token_requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].body, twice.as_bytes());
    assert_eq!(recorded[1].body, body.as_bytes());
    assert_eq!(recorded[1].method, "POST");
    assert_eq!(recorded[1].path_and_query, "/v2/oauth/token/");
    assert_eq!(
        recorded[1].headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    // A debug print shows the shape only, never the secret or the code.
    let printed = format!("{:?}", recorded[1]);
    assert!(
        !printed.contains(APP_SECRET) && !printed.contains(&escaped),
        "{printed}"
    );
}

#[tokio::test]
async fn oauth_error_fault_with_status_200_then_normal_again() {
    let sandbox = Running::start().await;
    let code = sandbox.code("user.info.basic", None);
    sandbox.sandbox.inject_fault(
        Fault::OAuthError {
            status: 200,
            error: "invalid_grant".into(),
            description: "Authorization code is expired.".into(),
        },
        2,
    );

    let body = assert_error(sandbox.exchange(&code).await, 200, "invalid_grant").await;
    assert_error(sandbox.exchange(&code).await, 200, "invalid_grant").await;
    let third = sandbox.exchange(&code).await;

    assert_eq!(body["error_description"], "Authorization code is expired.");
    assert_eq!(
        third.status(),
        200,
        "a fault answers without spending the code"
    );
    assert_eq!(sandbox.sandbox.token_requests().len(), 3);
}

#[tokio::test]
async fn rate_limited_fault_in_both_shapes() {
    let sandbox = Running::start().await;
    let code = sandbox.code("user.info.basic", None);
    sandbox
        .sandbox
        .inject_fault(Fault::RateLimited { status: 429 }, 1);
    sandbox
        .sandbox
        .inject_fault(Fault::RateLimited { status: 200 }, 1);

    let limited = sandbox.exchange(&code).await;
    assert_eq!(header(&limited, "retry-after"), "60");
    assert_error(limited, 429, "rate_limit_exceeded").await;
    let in_body = sandbox.exchange(&code).await;
    assert_eq!(header(&in_body, "retry-after"), "");
    assert_error(in_body, 200, "rate_limit_exceeded").await;
}

#[tokio::test]
async fn html_500_and_garbage_faults() {
    let sandbox = Running::start().await;
    let code = sandbox.code("user.info.basic", None);
    sandbox.sandbox.inject_fault(Fault::Html500, 1);
    sandbox.sandbox.inject_fault(Fault::Garbage, 1);

    let html = sandbox.exchange(&code).await;
    assert_eq!(html.status(), 500);
    assert!(header(&html, "content-type").starts_with("text/html"));
    assert!(html.text().await.unwrap().contains("<html>"));

    let garbage = sandbox.exchange(&code).await;
    assert_eq!(garbage.status(), 200);
    let body = garbage.bytes().await.unwrap();
    assert!(!body.is_empty());
    assert!(serde_json::from_slice::<Value>(&body).is_err());
}

#[tokio::test]
async fn truncated_fault_fails_reading_the_body() {
    let sandbox = Running::start().await;
    let code = sandbox.code("user.info.basic", None);
    sandbox.sandbox.inject_fault(Fault::Truncated, 1);

    let response = sandbox.exchange(&code).await;

    assert_eq!(response.status(), 200);
    let announced: usize = header(&response, "content-length").parse().unwrap();
    assert!(announced > 0);
    let error = response
        .bytes()
        .await
        .expect_err("the body stops short of its length");
    assert!(error.is_body() || error.is_decode(), "{error:?}");
    // The connection is gone, but the sandbox is not.
    assert_eq!(sandbox.exchange(&code).await.status(), 200);
}

#[tokio::test]
async fn slow_fault_delays_a_normal_answer() {
    let sandbox = Running::start().await;
    let code = sandbox.code("user.info.basic", None);
    let delay = Duration::from_millis(400);
    sandbox.sandbox.inject_fault(Fault::Slow(delay), 1);

    let started = Instant::now();
    let response = sandbox.exchange(&code).await;

    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    assert_eq!(response.status(), 200);
    let quick = Instant::now();
    let _ = sandbox
        .exchange(&sandbox.code("user.info.basic", None))
        .await;
    assert!(quick.elapsed() < delay, "the fault applies once");
}

#[tokio::test]
async fn reset_fault_is_a_tcp_rst_without_any_bytes() {
    let sandbox = Running::start().await;
    let code = sandbox.code("user.info.basic", None);
    sandbox.sandbox.inject_fault(Fault::Reset, 2);

    let error = client()
        .post(sandbox.url("/v2/oauth/token/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&code_fields(&code)))
        .send()
        .await
        .expect_err("the connection is reset");
    assert!(!error.is_timeout(), "{error:?}");
    assert_eq!(
        io_error_kind(&error),
        Some(io::ErrorKind::ConnectionReset),
        "{error:?}"
    );

    // On the wire: the request goes out and nothing but a reset comes back.
    let body = encode(&code_fields(&code));
    let request = format!(
        "POST /v2/oauth/token/ HTTP/1.1\r\nhost: sandbox\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(sandbox.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let read = stream.read_to_end(&mut received).await;
    assert_eq!(read.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );

    assert_eq!(sandbox.sandbox.token_requests().len(), 2);
    assert_eq!(sandbox.exchange(&code).await.status(), 200);
}

#[tokio::test]
async fn oversized_fault_sends_a_big_token_body() {
    let sandbox = Running::start().await;
    let code = sandbox.code("user.info.basic", None);
    sandbox.sandbox.inject_fault(Fault::Oversized(200_000), 1);

    let (status, _, body) = answer(sandbox.exchange(&code).await).await;

    assert_eq!(status, 200);
    let size = body.to_string().len();
    assert!((200_000..201_000).contains(&size), "{size}");
    assert!(body["access_token"].as_str().unwrap().starts_with("act."));
}

#[tokio::test]
async fn cleared_faults_do_not_fire() {
    let sandbox = Running::start().await;
    let code = sandbox.code("user.info.basic", None);
    sandbox.sandbox.inject_fault(Fault::Html500, 5);

    sandbox.sandbox.clear_faults();

    assert_eq!(sandbox.exchange(&code).await.status(), 200);
}

fn authorize_url(sandbox: &Running, fields: &[(&str, &str)]) -> String {
    format!("{}?{}", sandbox.url("/v2/auth/authorize/"), encode(fields))
}

fn redirect_query(response: &reqwest::Response) -> (String, Vec<(String, String)>) {
    assert_eq!(response.status(), 302);
    let location = header(response, "location");
    let (base, query) = location.split_once('?').unwrap();
    let pairs = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    (base.to_owned(), pairs)
}

fn value<'p>(pairs: &'p [(String, String)], name: &str) -> Option<&'p str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

#[tokio::test]
async fn authorize_consents_and_redirects_with_a_working_code() {
    let sandbox = Running::start().await;
    let challenge = challenge_of(VERIFIER);
    let url = authorize_url(
        &sandbox,
        &[
            ("client_key", APP_KEY),
            ("response_type", "code"),
            ("scope", "user.info.basic,user.info.profile"),
            ("redirect_uri", REDIRECT),
            ("state", "st@te/1"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );

    let response = client().get(url).send().await.unwrap();

    let (base, pairs) = redirect_query(&response);
    assert_eq!(base, REDIRECT);
    assert_eq!(value(&pairs, "state"), Some("st@te/1"));
    assert_eq!(
        value(&pairs, "scopes"),
        Some("user.info.basic,user.info.profile")
    );
    let code = value(&pairs, "code").unwrap();
    let mut fields = code_fields(code);
    fields.push(("code_verifier", VERIFIER));
    assert_eq!(sandbox.post_token(&fields).await.status(), 200);
}

#[tokio::test]
async fn authorize_reports_errors_through_the_redirect_or_a_page() {
    let sandbox = Running::start().await;
    let base = [
        ("client_key", APP_KEY),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
    ];

    // Auth0 joins scopes with spaces; TikTok wants commas.
    let mut fields = base.to_vec();
    fields.extend([
        ("scope", "user.info.basic user.info.profile"),
        ("state", "s1"),
    ]);
    let response = client()
        .get(authorize_url(&sandbox, &fields))
        .send()
        .await
        .unwrap();
    let (to, pairs) = redirect_query(&response);
    assert_eq!(to, REDIRECT);
    assert_eq!(value(&pairs, "error"), Some("invalid_scope"));
    assert!(value(&pairs, "error_description").is_some());
    assert_eq!(value(&pairs, "state"), Some("s1"));
    assert_eq!(value(&pairs, "code"), None);

    // A base64url challenge is RFC 7636's encoding, not TikTok's.
    let mut fields = base.to_vec();
    fields.extend([
        ("scope", "user.info.basic"),
        (
            "code_challenge",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        ),
        ("code_challenge_method", "S256"),
    ]);
    let response = client()
        .get(authorize_url(&sandbox, &fields))
        .send()
        .await
        .unwrap();
    assert_eq!(
        value(&redirect_query(&response).1, "error"),
        Some("invalid_request")
    );

    // An unregistered redirect URI is never redirected to.
    let fields = [
        ("client_key", APP_KEY),
        ("response_type", "code"),
        ("redirect_uri", "https://attacker.example/cb"),
        ("scope", "user.info.basic"),
    ];
    let response = client()
        .get(authorize_url(&sandbox, &fields))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(header(&response, "location"), "");
}

async fn tokens_for(sandbox: &Running, scope: &str) -> Value {
    let (status, _, body) = answer(sandbox.exchange(&sandbox.code(scope, None)).await).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn user_info(sandbox: &Running, token: &str, fields: Option<&str>) -> (u16, Value) {
    let mut url = sandbox.url("/v2/user/info/");
    if let Some(fields) = fields {
        url = format!("{url}?fields={fields}");
    }
    let response = client().get(url).bearer_auth(token).send().await.unwrap();
    let (status, log_id, body) = answer(response).await;
    assert_eq!(body["error"]["log_id"], log_id.as_str());
    (status, body)
}

#[tokio::test]
async fn user_info_answers_in_tiktoks_envelope() {
    let sandbox = Running::start().await;
    let tokens = tokens_for(&sandbox, "user.info.basic").await;
    let access_token = tokens["access_token"].as_str().unwrap();

    let (status, body) = user_info(&sandbox, access_token, Some("open_id,display_name")).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["error"]["code"], "ok");
    assert_eq!(body["error"]["message"], "");
    let user = body["data"]["user"].as_object().unwrap();
    assert_eq!(user.len(), 2);
    assert_eq!(user["open_id"], tokens["open_id"]);
    assert_eq!(user["display_name"], "Sandbox User");
    let recorded = sandbox.sandbox.user_info_requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0].path_and_query,
        "/v2/user/info/?fields=open_id,display_name"
    );
    assert_eq!(
        recorded[0].headers["authorization"],
        format!("Bearer {access_token}").as_str()
    );
}

#[tokio::test]
async fn user_info_errors() {
    let sandbox = Running::start().await;
    let basic = tokens_for(&sandbox, "user.info.basic").await;
    let basic = basic["access_token"].as_str().unwrap();
    let stats = tokens_for(&sandbox, "user.info.basic,user.info.stats").await;
    let stats = stats["access_token"].as_str().unwrap();

    let (status, body) = user_info(&sandbox, basic, Some("open_id,follower_count")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("scope_not_authorized"))
    );
    assert_eq!(body["data"], serde_json::json!({}));

    let (status, body) = user_info(&sandbox, stats, Some("open_id,follower_count")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["user"]["follower_count"].is_number());

    let (status, body) = user_info(&sandbox, basic, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_params"))
    );

    let (status, body) = user_info(&sandbox, "act.not-a-token", Some("open_id")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("access_token_invalid"))
    );
}

#[tokio::test]
async fn revoke_kills_the_access_and_refresh_tokens() {
    let sandbox = Running::start().await;
    let tokens = tokens_for(&sandbox, "user.info.basic").await;
    let access_token = tokens["access_token"].as_str().unwrap();
    let revoke = |secret: &str| {
        encode(&[
            ("client_key", APP_KEY),
            ("client_secret", secret),
            ("token", access_token),
        ])
    };

    let wrong = sandbox
        .post_raw("/v2/oauth/revoke/", revoke(OTHER_SECRET))
        .await;
    assert_error(wrong, 400, "invalid_client").await;
    assert_eq!(
        user_info(&sandbox, access_token, Some("open_id")).await.0,
        200
    );

    let revoked = sandbox
        .post_raw("/v2/oauth/revoke/", revoke(APP_SECRET))
        .await;
    assert_eq!(revoked.status(), 200);

    assert_eq!(
        user_info(&sandbox, access_token, Some("open_id")).await.0,
        401
    );
    let refresh = encode(&[
        ("client_key", APP_KEY),
        ("client_secret", APP_SECRET),
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
    ]);
    let refreshed = sandbox.post_raw("/v2/oauth/token/", refresh).await;
    assert_error(refreshed, 400, "invalid_grant").await;
}

#[tokio::test]
async fn control_endpoints_over_http() {
    let sandbox = Running::start().await;
    let http = client();

    let health = http
        .get(sandbox.url("/sandbox/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    // No fields: the first app, its first redirect URI, the basic scope.
    let minted = http
        .post(sandbox.url("/sandbox/codes"))
        .send()
        .await
        .unwrap();
    let (status, _, body) = answer(minted).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, tokens) = answer(sandbox.exchange(body["code"].as_str().unwrap()).await).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], "user.info.basic");

    // Form fields pick another app.
    let fields = [
        ("client_key", OTHER_KEY),
        ("scope", "user.info.basic,user.info.profile"),
    ];
    let minted = http
        .post(sandbox.url("/sandbox/codes"))
        .form(&fields)
        .send()
        .await
        .unwrap();
    let (_, _, body) = answer(minted).await;
    let code = body["code"].as_str().unwrap();
    let other_fields = [
        ("client_key", OTHER_KEY),
        ("client_secret", OTHER_SECRET),
        ("code", code),
        ("grant_type", "authorization_code"),
        ("redirect_uri", OTHER_REDIRECT),
    ];
    assert_eq!(sandbox.post_token(&other_fields).await.status(), 200);

    let url = sandbox.url("/sandbox/codes?redirect_uri=https://nowhere.example/cb");
    let refused = http.post(url).send().await.unwrap();
    assert_eq!(refused.status(), 400);

    let fault =
        serde_json::json!({ "fault": "oauth_error", "status": 200, "error": "server_error" });
    let injected = http
        .post(sandbox.url("/sandbox/faults"))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert_eq!(injected.status(), 204);
    let code = sandbox.code("user.info.basic", None);
    assert_error(sandbox.exchange(&code).await, 200, "server_error").await;

    let fault = serde_json::json!({ "fault": "html_500", "times": 3 });
    http.post(sandbox.url("/sandbox/faults"))
        .json(&fault)
        .send()
        .await
        .unwrap();
    let cleared = http
        .delete(sandbox.url("/sandbox/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 204);
    assert_eq!(sandbox.exchange(&code).await.status(), 200);

    let bad = serde_json::json!({ "fault": "meteor_strike" });
    let refused = http
        .post(sandbox.url("/sandbox/faults"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
}

#[test]
fn mint_code_refuses_what_tiktok_would() {
    let sandbox = Sandbox::new(vec![SandboxApp {
        client_key: APP_KEY.into(),
        client_secret: APP_SECRET.into(),
        redirect_uris: vec![REDIRECT.into()],
    }]);
    let grant = |key: &str, redirect: &str, scope: &str, challenge: Option<&str>| CodeGrant {
        client_key: key.into(),
        redirect_uri: redirect.into(),
        scope: scope.into(),
        code_challenge: challenge.map(str::to_owned),
    };

    let unknown = sandbox.mint_code(grant("nope", REDIRECT, "user.info.basic", None));
    assert_eq!(unknown, Err(SandboxError::UnknownApp("nope".into())));
    let unregistered = sandbox.mint_code(grant(APP_KEY, OTHER_REDIRECT, "user.info.basic", None));
    assert!(matches!(
        unregistered,
        Err(SandboxError::UnregisteredRedirectUri(_))
    ));
    let spaced = sandbox.mint_code(grant(
        APP_KEY,
        REDIRECT,
        "user.info.basic user.info.stats",
        None,
    ));
    assert_eq!(spaced, Err(SandboxError::InvalidScope));
    let base64 = sandbox.mint_code(grant(APP_KEY, REDIRECT, "user.info.basic", Some("E9Mel")));
    assert_eq!(base64, Err(SandboxError::InvalidCodeChallenge));
    assert!(
        sandbox
            .mint_code(grant(APP_KEY, REDIRECT, "user.info.basic", None))
            .is_ok()
    );
}

#[tokio::test]
async fn serve_returns_after_shutdown_even_with_an_idle_connection() {
    let mut sandbox = Running::start().await;
    let http = client();
    // Leaves a keep-alive connection in the client's pool.
    assert_eq!(
        http.get(sandbox.url("/sandbox/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let _ = sandbox.stop.take().unwrap().send(());
    let served = sandbox.served.take().unwrap();

    let result = tokio::time::timeout(Duration::from_secs(10), served).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    assert!(tokio::net::TcpStream::connect(sandbox.addr).await.is_err());
}
