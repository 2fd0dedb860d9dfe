//! TikTok's v2 OAuth endpoints: token, revoke and authorize.

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};

use super::conn::ConnectionFaults;
use super::fault::FaultAction;
use super::form::{Form, FormError};
use super::grants::{Rejection, TokenBody};
use super::router::{LogId, flat_error, html_page, is_form, json_response};
use super::{CodeGrant, RecordedRequest, Sandbox, SandboxError};

/// Why a token request failed before or during its grant. The message is the
/// `error_description`.
#[derive(Debug, thiserror::Error)]
enum TokenError {
    #[error("the token endpoint only accepts POST")]
    Method,
    #[error("content type must be application/x-www-form-urlencoded")]
    ContentType,
    #[error(transparent)]
    Form(#[from] FormError),
    #[error("missing required parameter {0}")]
    Missing(&'static str),
    #[error("client_key is unknown")]
    UnknownClient,
    #[error("client_secret does not match the client_key")]
    WrongSecret,
    #[error("grant_type must be authorization_code or refresh_token")]
    UnsupportedGrantType,
    #[error(transparent)]
    Grant(#[from] Rejection),
}

impl TokenError {
    fn category(&self) -> &'static str {
        match self {
            TokenError::Method
            | TokenError::ContentType
            | TokenError::Form(_)
            | TokenError::Missing(_) => "invalid_request",
            TokenError::UnknownClient | TokenError::WrongSecret => "invalid_client",
            TokenError::UnsupportedGrantType => "unsupported_grant_type",
            TokenError::Grant(rejection) => rejection.category(),
        }
    }

    // TikTok does not document its statuses; 400 for every OAuth error is the plain reading.
    fn status(&self) -> StatusCode {
        match self {
            TokenError::Method => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// `/v2/oauth/token/`: records the request, plays a queued fault if there is one, then runs
/// the grant.
pub(super) async fn token(
    State(sandbox): State<Sandbox>,
    Extension(connection): Extension<ConnectionFaults>,
    Extension(LogId(log_id)): Extension<LogId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sandbox.record_token_request(RecordedRequest::new(&method, &uri, &headers, &body));

    if let Some(fault) = sandbox.take_fault() {
        match fault.action(&log_id) {
            FaultAction::Delay(delay) => tokio::time::sleep(delay).await,
            FaultAction::Answer(answer) => return answer,
            FaultAction::Reset => {
                connection.reset();
                // Never written: the connection fails the first write and resets instead.
                return StatusCode::OK.into_response();
            }
            FaultAction::Truncate {
                answer,
                keep_body_bytes,
            } => {
                connection.truncate_body(keep_body_bytes);
                return answer;
            }
        }
    }

    match exchange(&sandbox, &method, &headers, &body) {
        Ok(tokens) => json_response(
            StatusCode::OK,
            serde_json::to_vec(&tokens).unwrap_or_default(),
        ),
        Err(error) => flat_error(
            error.status(),
            error.category(),
            &error.to_string(),
            &log_id,
        ),
    }
}

fn exchange(
    sandbox: &Sandbox,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<TokenBody, TokenError> {
    if method != Method::POST {
        return Err(TokenError::Method);
    }
    let form = parse_form_body(headers, body)?;
    let client_key = authenticate(sandbox, &form)?;

    let grant_type = form
        .get("grant_type")
        .ok_or(TokenError::Missing("grant_type"))?;
    match grant_type {
        "authorization_code" => {
            let code = form.get("code").ok_or(TokenError::Missing("code"))?;
            let redirect_uri = form
                .get("redirect_uri")
                .ok_or(TokenError::Missing("redirect_uri"))?;
            let verifier = form.get("code_verifier");
            Ok(sandbox
                .grants()
                .redeem_code(client_key, code, redirect_uri, verifier)?)
        }
        "refresh_token" => {
            let refresh_token = form
                .get("refresh_token")
                .ok_or(TokenError::Missing("refresh_token"))?;
            Ok(sandbox.grants().refresh(client_key, refresh_token)?)
        }
        _ => Err(TokenError::UnsupportedGrantType),
    }
}

fn parse_form_body(headers: &HeaderMap, body: &[u8]) -> Result<Form, TokenError> {
    if !is_form(headers) {
        return Err(TokenError::ContentType);
    }
    Ok(Form::parse(body)?)
}

/// Checks `client_key` and `client_secret` from the body, the only place TikTok reads them. A
/// `client_id` is not TikTok's name, so a request with only that is missing its `client_key`.
fn authenticate<'f>(sandbox: &Sandbox, form: &'f Form) -> Result<&'f str, TokenError> {
    let client_key = form
        .get("client_key")
        .ok_or(TokenError::Missing("client_key"))?;
    let client_secret = form
        .get("client_secret")
        .ok_or(TokenError::Missing("client_secret"))?;
    let app = sandbox.app(client_key).ok_or(TokenError::UnknownClient)?;
    if app.client_secret != client_secret {
        return Err(TokenError::WrongSecret);
    }
    Ok(client_key)
}

/// `/v2/oauth/revoke/`: revokes an access or refresh token and its siblings. Success has an
/// empty body.
pub(super) async fn revoke(
    State(sandbox): State<Sandbox>,
    Extension(LogId(log_id)): Extension<LogId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let revoked = parse_form_body(&headers, &body).and_then(|form| {
        let client_key = authenticate(&sandbox, &form)?;
        let token = form.get("token").ok_or(TokenError::Missing("token"))?;
        sandbox.grants().revoke(client_key, token);
        Ok(())
    });
    match revoked {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => flat_error(
            error.status(),
            error.category(),
            &error.to_string(),
            &log_id,
        ),
    }
}

/// `/v2/auth/authorize/`: the user consents at once and the browser is sent back with a code.
/// An unknown app or an unregistered redirect URI gets an error page instead of a redirect, since
/// sending the browser to an unverified address is what an open redirector does.
pub(super) async fn authorize(State(sandbox): State<Sandbox>, uri: Uri) -> Response {
    let query = uri.query().unwrap_or_default();
    let Ok(query) = Form::parse(query.as_bytes()) else {
        return html_page(StatusCode::BAD_REQUEST, "400 Bad Request: malformed query");
    };
    let Some(app) = query.get("client_key").and_then(|key| sandbox.app(key)) else {
        return html_page(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: unknown client_key",
        );
    };
    let Some(redirect_uri) = query
        .get("redirect_uri")
        .filter(|uri| app.redirect_uris.iter().any(|r| r == uri))
    else {
        return html_page(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: redirect_uri not registered",
        );
    };

    let outcome = match consent(&sandbox, &query, &app.client_key, redirect_uri) {
        Ok((code, scope)) => vec![("code", code), ("scopes", scope)],
        Err((error, description)) => {
            vec![
                ("error", error.to_owned()),
                ("error_description", description.to_owned()),
            ]
        }
    };
    let mut back = form_urlencoded::Serializer::new(String::new());
    for (name, value) in &outcome {
        back.append_pair(name, value);
    }
    if let Some(state) = query.get("state") {
        back.append_pair("state", state);
    }
    let location = format!("{redirect_uri}?{}", back.finish());
    match HeaderValue::try_from(location) {
        Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        Err(_) => html_page(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: redirect_uri not ascii",
        ),
    }
}

/// The checks TikTok reports back to the client through the redirect, then the code.
fn consent(
    sandbox: &Sandbox,
    query: &Form,
    client_key: &str,
    redirect_uri: &str,
) -> Result<(String, String), (&'static str, &'static str)> {
    if query.get("response_type") != Some("code") {
        return Err(("unsupported_response_type", "response_type must be code"));
    }
    let scope = query
        .get("scope")
        .ok_or(("invalid_request", "scope is required"))?;
    let code_challenge = query.get("code_challenge");
    match (code_challenge, query.get("code_challenge_method")) {
        (None, None) | (Some(_), Some("S256")) => {}
        (None, Some(_)) => return Err(("invalid_request", "code_challenge is required")),
        (Some(_), _) => return Err(("invalid_request", "code_challenge_method must be S256")),
    }

    let grant = CodeGrant {
        client_key: client_key.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        scope: scope.to_owned(),
        code_challenge: code_challenge.map(str::to_owned),
    };
    match sandbox.mint_code(grant) {
        Ok(code) => Ok((code, scope.to_owned())),
        Err(SandboxError::InvalidScope) => Err((
            "invalid_scope",
            "scope must be comma-separated, without spaces",
        )),
        Err(SandboxError::InvalidCodeChallenge) => Err((
            "invalid_request",
            "code_challenge must be hex of sha-256 (64 characters)",
        )),
        Err(_) => Err(("invalid_request", "client_key or redirect_uri is not valid")),
    }
}
