//! The sandbox's routes, the log id every answer carries, and the answer shapes shared by the
//! handlers.

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde_json::json;
use tracing::debug;

use super::{Sandbox, control, ids, oauth, user_info};

/// TikTok's token path. The trailing slash is part of it: without it TikTok's CDN answers 404.
pub(super) const TOKEN_PATH: &str = "/v2/oauth/token/";

/// The header in which TikTok returns the request's log id.
const LOG_ID_HEADER: HeaderName = HeaderName::from_static("x-tt-logid");

/// The log id of the request being answered; error bodies repeat the header's value.
#[derive(Clone, Debug)]
pub(super) struct LogId(pub(super) String);

/// Every sandbox route, with the log id stamped on every answer.
pub(super) fn router(sandbox: Sandbox) -> Router {
    Router::new()
        // `any`, so that every request reaching the token path is recorded and can get a fault.
        .route(TOKEN_PATH, any(oauth::token))
        .route("/v2/oauth/revoke/", post(oauth::revoke))
        .route("/v2/auth/authorize/", get(oauth::authorize))
        .route("/v2/user/info/", get(user_info::user_info))
        .route("/sandbox/codes", post(control::mint_code))
        .route(
            "/sandbox/faults",
            post(control::inject_fault).delete(control::clear_faults),
        )
        .route("/sandbox/healthz", get(control::healthz))
        .fallback(not_found)
        .layer(middleware::from_fn(stamp_log_id))
        .with_state(sandbox)
}

async fn stamp_log_id(mut request: Request, next: Next) -> Response {
    let log_id = ids::log_id();
    let method = request.method().clone();
    // The path only: queries carry codes, challenges and state.
    let path = request.uri().path().to_owned();
    request.extensions_mut().insert(LogId(log_id.clone()));

    let mut response = next.run(request).await;

    if let Ok(value) = HeaderValue::from_str(&log_id) {
        response.headers_mut().entry(LOG_ID_HEADER).or_insert(value);
    }
    debug!(%method, path, status = response.status().as_u16(), "sandbox request");
    response
}

/// What a CDN in front of TikTok answers for a path it does not know: HTML, not JSON.
async fn not_found() -> Response {
    html_page(StatusCode::NOT_FOUND, "404 Not Found")
}

/// TikTok's flat OAuth error body.
pub(super) fn flat_error(
    status: StatusCode,
    error: &str,
    description: &str,
    log_id: &str,
) -> Response {
    let body = json!({ "error": error, "error_description": description, "log_id": log_id });
    json_response(status, body.to_string().into_bytes())
}

/// A JSON answer from already serialized bytes.
pub(super) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A minimal HTML page, the shape of answers from infrastructure rather than from the API.
pub(super) fn html_page(status: StatusCode, title: &str) -> Response {
    let body = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1>\
         </center>\r\n</body>\r\n</html>\r\n"
    );
    (status, [(header::CONTENT_TYPE, "text/html")], body).into_response()
}

/// Whether the request says its body is a form, the only body TikTok's endpoints accept.
pub(super) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| {
            media_type
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}
