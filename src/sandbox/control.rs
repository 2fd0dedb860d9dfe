//! `/sandbox/*`: minting codes and injecting faults over HTTP, for runs outside Rust tests
//! (the demo, the local cluster, the benchmark, a README `curl`).

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri};
use serde::Deserialize;
use serde_json::json;

use super::form::Form;
use super::router::{is_form, json_response};
use super::{CodeGrant, DEFAULT_SCOPE, Fault, Sandbox, SandboxError};

/// The delay of a `slow` fault when none is given.
const DEFAULT_SLOW_MS: u64 = 1_000;

/// The size of an `oversized` answer when none is given: well over any sensible cap.
const DEFAULT_OVERSIZED_BYTES: usize = 1 << 20;

fn control_error(message: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({ "error": message }).to_string().into_bytes(),
    )
}

/// `POST /sandbox/codes`: mints a code from query or form fields, all optional.
pub(super) async fn mint_code(
    State(sandbox): State<Sandbox>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !body.is_empty() && !is_form(&headers) {
        return control_error("send the fields as a form body or in the query");
    }
    // Query and body parsed as one form, so a field given in both is a repeated field.
    let mut fields = uri.query().unwrap_or_default().as_bytes().to_vec();
    fields.push(b'&');
    fields.extend_from_slice(&body);
    let form = match Form::parse(&fields) {
        Ok(form) => form,
        Err(error) => return control_error(&error.to_string()),
    };

    match grant_from(&sandbox, &form).and_then(|grant| sandbox.mint_code(grant)) {
        // Plain text on request, so a shell can use the code without a JSON tool.
        Ok(code) if wants_text(&headers) => code.into_response(),
        Ok(code) => json_response(
            StatusCode::OK,
            json!({ "code": code }).to_string().into_bytes(),
        ),
        Err(error) => control_error(&error.to_string()),
    }
}

fn wants_text(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.starts_with("text/plain"))
}

/// Fills in the defaults: the first app, its first redirect URI, the basic scope.
fn grant_from(sandbox: &Sandbox, form: &Form) -> Result<CodeGrant, SandboxError> {
    let app = match form.get("client_key") {
        Some(key) => sandbox
            .app(key)
            .ok_or_else(|| SandboxError::UnknownApp(key.to_owned()))?,
        None => sandbox.first_app().ok_or(SandboxError::NoApps)?,
    };
    let redirect_uri = match form.get("redirect_uri") {
        Some(uri) => uri.to_owned(),
        None => app
            .redirect_uris
            .first()
            .cloned()
            .ok_or(SandboxError::NoRedirectUri)?,
    };
    Ok(CodeGrant {
        client_key: app.client_key.clone(),
        redirect_uri,
        scope: form.get("scope").unwrap_or(DEFAULT_SCOPE).to_owned(),
        code_challenge: form.get("code_challenge").map(str::to_owned),
    })
}

/// The fault names accepted by `POST /sandbox/faults`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FaultKind {
    OauthError,
    RateLimited,
    Html500,
    Garbage,
    Truncated,
    Slow,
    Reset,
    Oversized,
}

/// The JSON body of `POST /sandbox/faults`. A misspelt field is refused rather than silently
/// ignored; a known field that the chosen fault does not use is ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    fault: FaultKind,
    #[serde(default = "one")]
    times: usize,
    status: Option<u16>,
    error: Option<String>,
    description: Option<String>,
    delay_ms: Option<u64>,
    bytes: Option<usize>,
}

fn one() -> usize {
    1
}

impl FaultRequest {
    fn into_fault(self) -> Fault {
        match self.fault {
            FaultKind::OauthError => Fault::OAuthError {
                status: self.status.unwrap_or(400),
                error: self.error.unwrap_or_else(|| "invalid_grant".to_owned()),
                description: self
                    .description
                    .unwrap_or_else(|| "error injected by the sandbox".to_owned()),
            },
            FaultKind::RateLimited => Fault::RateLimited {
                status: self.status.unwrap_or(429),
            },
            FaultKind::Html500 => Fault::Html500,
            FaultKind::Garbage => Fault::Garbage,
            FaultKind::Truncated => Fault::Truncated,
            FaultKind::Slow => Fault::Slow(Duration::from_millis(
                self.delay_ms.unwrap_or(DEFAULT_SLOW_MS),
            )),
            FaultKind::Reset => Fault::Reset,
            FaultKind::Oversized => Fault::Oversized(self.bytes.unwrap_or(DEFAULT_OVERSIZED_BYTES)),
        }
    }
}

/// `POST /sandbox/faults`: queues a fault for the next token requests.
pub(super) async fn inject_fault(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultRequest>(&body) {
        Ok(request) => {
            let times = request.times;
            sandbox.inject_fault(request.into_fault(), times);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => control_error(&format!("fault request: {error}")),
    }
}

/// `DELETE /sandbox/faults`: drops every queued fault.
pub(super) async fn clear_faults(State(sandbox): State<Sandbox>) -> StatusCode {
    sandbox.clear_faults();
    StatusCode::NO_CONTENT
}

/// `GET /sandbox/healthz`: for readiness probes and scripts waiting for the sandbox.
pub(super) async fn healthz() -> &'static str {
    "ok"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_requests_get_defaults() {
        let request: FaultRequest = serde_json::from_str(r#"{"fault":"oauth_error"}"#).unwrap();
        assert_eq!(request.times, 1);
        assert!(matches!(
            request.into_fault(),
            Fault::OAuthError { status: 400, .. }
        ));

        let request: FaultRequest =
            serde_json::from_str(r#"{"fault":"slow","delay_ms":5,"times":3}"#).unwrap();
        assert_eq!(request.times, 3);
        assert_eq!(request.into_fault(), Fault::Slow(Duration::from_millis(5)));

        assert!(serde_json::from_str::<FaultRequest>(r#"{"fault":"nope"}"#).is_err());
        assert!(serde_json::from_str::<FaultRequest>(r#"{"fault":"reset","x":1}"#).is_err());
    }
}
