//! Traces, metrics and log correlation, observed from outside: an OTLP receiver stand-in for
//! the binary's exporter, and `/metrics` scraped over HTTP.

mod support;

use std::collections::HashMap;

use support::otlp::{Protocol, ReceivedSpan, Receiver};
use support::*;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

/// The proxy binary exporting to `receiver_addr` over `protocol`.
async fn traced_proxy(
    sandbox: &TestSandbox,
    protocol: Protocol,
    receiver_addr: std::net::SocketAddr,
    schedule_delay_ms: u32,
) -> (ProxyProcess, std::path::PathBuf) {
    let config = config_file(sandbox, "");
    let proxy = ProxyProcess::start(&[
        ("TIKTOK_AUTH0_PROXY_CONFIG", config.display().to_string()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{receiver_addr}"),
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            protocol.env_value().to_owned(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", schedule_delay_ms.to_string()),
    ])
    .await;
    (proxy, config)
}

async fn post_traced(url: &str, form: &[(&str, &str)]) -> Answer {
    let response = http()
        .post(url)
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01"))
        .header("tracestate", "caller=abc")
        .form(form)
        .send()
        .await
        .unwrap();
    Answer::read(response).await
}

/// A code exchange for app A through `proxy`, sent with the caller's trace context.
async fn exchange_traced(proxy: &ProxyProcess, sandbox: &TestSandbox) -> Answer {
    let code = sandbox.code(APP_A_KEY);
    post_traced(
        &proxy.url("/token"),
        &code_form(APP_A_KEY, APP_A_SECRET, &code),
    )
    .await
}

/// Waits until the receiver holds a server span and a client span of the trace.
async fn spans_of_trace(receiver: &Receiver, count: usize) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    eventually("the exported spans", || {
        spans = receiver
            .spans()
            .into_iter()
            .filter(|span| span.trace_id() == TRACE_ID)
            .collect();
        std::future::ready(spans.len() >= count)
    })
    .await;
    spans
}

fn by_kind(spans: &[ReceivedSpan], kind: i32) -> Vec<&ReceivedSpan> {
    spans.iter().filter(|span| span.span.kind == kind).collect()
}

// OTLP span kinds and status codes.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const STATUS_ERROR: i32 = 2;

async fn a_token_exchange_is_traced_end_to_end(protocol: Protocol) {
    let (receiver, receiver_addr) = Receiver::start(protocol).await;
    let sandbox = TestSandbox::start().await;
    let (proxy, config) = traced_proxy(&sandbox, protocol, receiver_addr, 50).await;

    let code = sandbox.code(APP_A_KEY);
    let answer = post_traced(
        &proxy.url("/token"),
        &code_form(APP_A_KEY, APP_A_SECRET, &code),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let mut secrets = vec![APP_A_SECRET.to_owned(), code];
    for token in ["access_token", "refresh_token"] {
        secrets.push(answer.body[token].as_str().unwrap().to_owned());
    }

    let spans = spans_of_trace(&receiver, 2).await;
    let server = by_kind(&spans, SERVER);
    let client = by_kind(&spans, CLIENT);
    assert_eq!((server.len(), client.len()), (1, 1), "{spans:#?}");
    let (server, client) = (server[0], client[0]);

    assert_eq!(
        server.parent_span_id(),
        CALLER_SPAN_ID,
        "the caller's span is the parent"
    );
    assert!(server.span.trace_state.contains("caller=abc"), "{server:?}");
    assert_eq!(server.span.name, "POST /token");
    assert_eq!(
        server.attribute("http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(server.attribute("http.route").as_deref(), Some("/token"));
    assert_eq!(server.int_attribute("http.response.status_code"), Some(200));
    assert_eq!(server.attribute("app").as_deref(), Some(APP_A_KEY));
    assert_eq!(
        server.attribute("grant_type").as_deref(),
        Some("authorization_code")
    );
    assert_eq!(server.attribute("outcome").as_deref(), Some("issued"));
    assert!(
        server
            .attribute("tiktok.log_id")
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(
        server.resource_attribute("service.name").as_deref(),
        Some("tiktok-auth0-proxy")
    );
    assert_eq!(
        server.resource_attribute("service.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );

    assert_eq!(client.parent_span_id(), server.span_id());
    assert_eq!(client.int_attribute("http.response.status_code"), Some(200));
    assert!(client.span.end_time_unix_nano > client.span.start_time_unix_nano);
    let traceparent = sandbox.sandbox.token_requests()[0]
        .headers
        .get("traceparent")
        .map(|value| value.to_str().unwrap().to_owned());
    assert_eq!(
        traceparent,
        Some(format!("00-{TRACE_ID}-{}-01", client.span_id())),
        "TikTok sees the client span as the parent"
    );

    // A TikTok error marks the client span and names the error on both spans.
    sandbox.next_token_answer_is_error(200, "invalid_grant");
    let code = sandbox.code(APP_A_KEY);
    let answer = post_traced(
        &proxy.url("/token"),
        &code_form(APP_A_KEY, APP_A_SECRET, &code),
    )
    .await;
    assert_eq!(answer.status, 400);
    let spans = spans_of_trace(&receiver, 4).await;
    let failed_client = by_kind(&spans, CLIENT)
        .into_iter()
        .find(|span| span.attribute("tiktok.error").is_some())
        .expect("the failed call's client span");
    assert_eq!(
        failed_client.span.status.as_ref().map(|status| status.code),
        Some(STATUS_ERROR)
    );
    assert_eq!(
        failed_client.attribute("tiktok.error").as_deref(),
        Some("invalid_grant")
    );
    let failed_server = by_kind(&spans, SERVER)
        .into_iter()
        .find(|span| span.attribute("outcome").as_deref() == Some("tiktok_error"))
        .expect("the failed request's server span");
    assert_eq!(
        failed_server.attribute("tiktok.error").as_deref(),
        Some("invalid_grant")
    );

    // Nothing secret in any span, attribute or event.
    let exported = format!("{:?}", receiver.spans());
    secrets.push(code);
    for secret in &secrets {
        assert!(
            !exported.contains(secret.as_str()),
            "a span carries `{secret}`"
        );
    }

    // The log line of the request carries the trace.
    let log = proxy.log();
    let line = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["message"] == "token request")
        .expect("a token request log line");
    assert_eq!(line["trace_id"], TRACE_ID);
    assert_eq!(line["span_id"].as_str(), Some(server.span_id().as_str()));
    let _ = std::fs::remove_file(config);
}

#[tokio::test]
async fn a_token_exchange_is_traced_over_http_protobuf() {
    a_token_exchange_is_traced_end_to_end(Protocol::HttpProtobuf).await;
}

#[tokio::test]
async fn a_token_exchange_is_traced_over_grpc() {
    a_token_exchange_is_traced_end_to_end(Protocol::Grpc).await;
}

#[tokio::test]
async fn spans_still_buffered_are_flushed_on_sigterm() {
    let (receiver, receiver_addr) = Receiver::start(Protocol::HttpProtobuf).await;
    let sandbox = TestSandbox::start().await;
    // Batches would wait ten minutes: only the shutdown flush can deliver them in time.
    let (mut proxy, config) =
        traced_proxy(&sandbox, Protocol::HttpProtobuf, receiver_addr, 600_000).await;

    let answer = exchange_traced(&proxy, &sandbox).await;
    assert_eq!(answer.status, 200);
    assert!(
        receiver.spans().is_empty(),
        "nothing is exported before the flush"
    );

    proxy.stop().await;
    let spans = spans_of_trace(&receiver, 2).await;
    assert!(spans.iter().any(|span| span.span.kind == SERVER));
    let _ = std::fs::remove_file(config);
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_and_tiktok_sees_no_traceparent() {
    let sandbox = TestSandbox::start().await;
    let config = config_file(&sandbox, "");
    let proxy =
        ProxyProcess::start(&[("TIKTOK_AUTH0_PROXY_CONFIG", config.display().to_string())]).await;
    let answer = exchange_traced(&proxy, &sandbox).await;
    assert_eq!(answer.status, 200);
    assert!(
        sandbox.sandbox.token_requests()[0]
            .headers
            .get("traceparent")
            .is_none()
    );
    assert!(!proxy.log().contains("exporting traces"));
    let _ = std::fs::remove_file(config);
}

/// Parses OpenMetrics text into `series -> value`, failing on any malformed line.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    let mut series = HashMap::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let metric = name.split('{').next().unwrap();
        assert!(
            metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line}"
        );
        if let Some(labels) = name.strip_prefix(metric) {
            assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')));
        }
        series.insert(name.to_owned(), value);
    }
    series
}

async fn scrape(proxy: &TestProxy) -> HashMap<String, f64> {
    let response = http()
        .get(proxy.admin_url("/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    parse_metrics(&response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_move_with_the_requests_made() {
    let sandbox = TestSandbox::start().await;
    let proxy = TestProxy::start(settings_for(&sandbox)).await;
    let issued = r#"tiktok_auth0_proxy_requests_total{endpoint="token",grant_type="authorization_code",outcome="issued"}"#;
    let refused = r#"tiktok_auth0_proxy_requests_total{endpoint="token",grant_type="none",outcome="invalid_client"}"#;
    let incomplete = r#"tiktok_auth0_proxy_requests_total{endpoint="token",grant_type="authorization_code",outcome="invalid_request"}"#;
    let tiktok_error =
        r#"tiktok_auth0_proxy_tiktok_errors_total{endpoint="token",error="invalid_grant"}"#;
    let latency = r#"tiktok_auth0_proxy_tiktok_request_duration_seconds_count{endpoint="token",result="tokens"}"#;

    let before = scrape(&proxy).await;
    assert_eq!(before.get("tiktok_auth0_proxy_apps_loaded"), Some(&2.0));
    assert_eq!(before.get(issued), None);

    for _ in 0..2 {
        let code = sandbox.code(APP_A_KEY);
        let answer = post_form(
            &proxy.url("/token"),
            &code_form(APP_A_KEY, APP_A_SECRET, &code),
        )
        .await;
        assert_eq!(answer.status, 200);
    }
    let mut without_redirect = code_form(APP_A_KEY, APP_A_SECRET, "c");
    without_redirect.retain(|(name, _)| *name != "redirect_uri");
    post_form(&proxy.url("/token"), &without_redirect).await;
    post_form(&proxy.url("/token"), &code_form(APP_A_KEY, "wrong", "c")).await;
    sandbox.next_token_answer_is_error(400, "invalid_grant");
    let code = sandbox.code(APP_A_KEY);
    post_form(
        &proxy.url("/token"),
        &code_form(APP_A_KEY, APP_A_SECRET, &code),
    )
    .await;
    for path in ["/livez", "/readyz", "/metrics"] {
        http().get(proxy.admin_url(path)).send().await.unwrap();
    }

    let after = scrape(&proxy).await;
    assert_eq!(after.get(issued), Some(&2.0));
    assert_eq!(after.get(refused), Some(&1.0));
    assert_eq!(
        after.get(incomplete),
        Some(&1.0),
        "counted under its grant type"
    );
    assert_eq!(after.get(tiktok_error), Some(&1.0));
    assert_eq!(after.get(latency), Some(&2.0));
    assert_eq!(
        after.get(r#"tiktok_auth0_proxy_request_duration_seconds_count{endpoint="token"}"#),
        Some(&5.0),
        "probes and scrapes are not counted as requests"
    );
    assert_eq!(
        after.get(r#"tiktok_auth0_proxy_credential_source_usable{source="awtestappalpha"}"#),
        Some(&1.0)
    );
}

#[tokio::test]
async fn the_sampler_variables_are_honoured() {
    let (receiver, receiver_addr) = Receiver::start(Protocol::HttpProtobuf).await;
    let sandbox = TestSandbox::start().await;
    let config = config_file(&sandbox, "");
    let mut proxy = ProxyProcess::start(&[
        ("TIKTOK_AUTH0_PROXY_CONFIG", config.display().to_string()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{receiver_addr}"),
        ),
        ("OTEL_TRACES_SAMPLER", "always_off".to_owned()),
    ])
    .await;
    let code = sandbox.code(APP_A_KEY);
    let form = code_form(APP_A_KEY, APP_A_SECRET, &code);
    assert_eq!(post_form(&proxy.url("/token"), &form).await.status, 200);

    // After the shutdown flush, whatever was sampled has been delivered: nothing was.
    proxy.stop().await;
    assert!(receiver.spans().is_empty(), "always_off samples nothing");
    let _ = std::fs::remove_file(config);
}

#[tokio::test]
async fn an_unsupported_otlp_protocol_stops_start_up() {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_tiktok-auth0-proxy"))
        .env("TIKTOK_CLIENT_KEY", "k")
        .env("TIKTOK_CLIENT_SECRET", "s")
        .env("TIKTOK_AUTH0_PROXY_LISTEN", "127.0.0.1:0")
        .env("TIKTOK_AUTH0_PROXY_ADMIN_LISTEN", "127.0.0.1:0")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DEADLINE, run)
        .await
        .expect("exits")
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/json"),
        "{stderr}"
    );
}

/// Without an OpenMetrics `Accept`, `/metrics` answers the classic Prometheus text format, in
/// which every sample belongs to the family its `# TYPE` line names.
#[tokio::test]
async fn metrics_are_classic_prometheus_text_unless_openmetrics_is_asked_for() {
    let sandbox = TestSandbox::start().await;
    let proxy = TestProxy::start(settings_for(&sandbox)).await;
    let code = sandbox.code(APP_A_KEY);
    post_form(
        &proxy.url("/token"),
        &code_form(APP_A_KEY, APP_A_SECRET, &code),
    )
    .await;

    let response = http()
        .get(proxy.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let text = response.text().await.unwrap();
    assert!(!text.contains("# EOF"));

    let mut families: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (families.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        assert!(
            families.contains_key(family),
            "{line} has no # TYPE of its own"
        );
    }
    assert_eq!(
        families
            .get("tiktok_auth0_proxy_requests_total")
            .map(String::as_str),
        Some("counter")
    );
}
