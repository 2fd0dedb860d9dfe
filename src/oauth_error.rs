//! RFC 6749 error answers: the only shape an error takes on its way to Auth0.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An OAuth 2.0 error answer (RFC 6749 section 5.2), with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    status: StatusCode,
    error: Cow<'static, str>,
    description: String,
    log_id: Option<String>,
    retry_after_seconds: Option<u64>,
    basic_challenge: bool,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    error_description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_id: Option<&'a str>,
}

impl OAuthError {
    /// An error with any status and code.
    pub fn new(
        status: StatusCode,
        error: impl Into<Cow<'static, str>>,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error: error.into(),
            description: description.into(),
            log_id: None,
            retry_after_seconds: None,
            basic_challenge: false,
        }
    }

    /// 400 `invalid_request`: the request is malformed or lacks a parameter.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// 413 `invalid_request`: the body is larger than the proxy reads.
    pub fn body_too_large(limit: usize) -> Self {
        let description = format!("request body is larger than {limit} bytes");
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            description,
        )
    }

    /// 400 `unsupported_grant_type`.
    pub fn unsupported_grant_type(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            description,
        )
    }

    /// 401 `invalid_client`: the client could not be authenticated.
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    /// 503 `temporarily_unavailable`.
    pub fn temporarily_unavailable(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            description,
        )
    }

    /// 404 `invalid_request` for a path the proxy does not serve.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request", "no such endpoint")
    }

    /// 405 `invalid_request` for a method the endpoint does not take.
    pub fn method_not_allowed() -> Self {
        let description = "this endpoint only accepts POST";
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            description,
        )
    }

    /// Attaches TikTok's `log_id`, which TikTok's support asks for.
    pub fn with_log_id(mut self, log_id: Option<String>) -> Self {
        self.log_id = log_id;
        self
    }

    /// Adds a `Retry-After` header.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    /// Adds a `WWW-Authenticate: Basic` challenge, owed when the client tried HTTP Basic.
    pub fn with_basic_challenge(mut self) -> Self {
        self.basic_challenge = true;
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The RFC 6749 error code.
    pub fn error(&self) -> &str {
        &self.error
    }

    /// The human-readable description.
    pub fn description(&self) -> &str {
        &self.description
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = Body {
            error: &self.error,
            error_description: &self.description,
            log_id: self.log_id.as_deref(),
        };
        let mut response = (self.status, Json(body)).into_response();

        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after_seconds {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.basic_challenge {
            let challenge = HeaderValue::from_static("Basic realm=\"tiktok-auth0-proxy\"");
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}
