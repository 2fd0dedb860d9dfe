//! TikTok's v2 user info endpoint: the sandbox user's profile, in TikTok's envelope.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri, header};
use serde_json::{Map, Value, json};

use super::form::{Form, FormError};
use super::grants::{Authorization, SANDBOX_USER};
use super::router::{LogId, json_response};
use super::{RecordedRequest, Sandbox, ids};

/// The user-info fields and the scope each needs, as TikTok documents them.
const USER_FIELDS: &[(&str, &str)] = &[
    ("open_id", "user.info.basic"),
    ("union_id", "user.info.basic"),
    ("avatar_url", "user.info.basic"),
    ("avatar_url_100", "user.info.basic"),
    ("avatar_large_url", "user.info.basic"),
    ("display_name", "user.info.basic"),
    ("bio_description", "user.info.profile"),
    ("profile_deep_link", "user.info.profile"),
    ("is_verified", "user.info.profile"),
    ("username", "user.info.profile"),
    ("follower_count", "user.info.stats"),
    ("following_count", "user.info.stats"),
    ("likes_count", "user.info.stats"),
    ("video_count", "user.info.stats"),
];

/// Why a user-info request failed; the message is the envelope's `message`.
#[derive(Debug, thiserror::Error)]
enum UserInfoError {
    #[error("the access token is missing, invalid or revoked")]
    TokenInvalid,
    #[error("fields is required")]
    MissingFields,
    #[error(transparent)]
    Query(#[from] FormError),
    #[error("unknown field {0}")]
    UnknownField(String),
    #[error("field {field} needs the scope {scope}, which the user did not grant")]
    ScopeNotAuthorized { field: String, scope: &'static str },
}

impl UserInfoError {
    fn code_and_status(&self) -> (&'static str, StatusCode) {
        match self {
            UserInfoError::TokenInvalid => ("access_token_invalid", StatusCode::UNAUTHORIZED),
            UserInfoError::ScopeNotAuthorized { .. } => {
                ("scope_not_authorized", StatusCode::UNAUTHORIZED)
            }
            _ => ("invalid_params", StatusCode::BAD_REQUEST),
        }
    }
}

/// `/v2/user/info/`: the sandbox user's profile, limited to the requested fields, in TikTok's
/// `{"data": …, "error": …}` envelope.
pub(super) async fn user_info(
    State(sandbox): State<Sandbox>,
    Extension(LogId(log_id)): Extension<LogId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sandbox.record_user_info_request(RecordedRequest::new(&method, &uri, &headers, &body));

    let (status, data, code, message) = match user_fields(&sandbox, &uri, &headers) {
        Ok(user) => (StatusCode::OK, json!({ "user": user }), "ok", String::new()),
        Err(error) => {
            let (code, status) = error.code_and_status();
            (status, json!({}), code, error.to_string())
        }
    };
    let envelope = json!({
        "data": data,
        "error": { "code": code, "message": message, "log_id": log_id },
    });
    json_response(status, envelope.to_string().into_bytes())
}

fn user_fields(
    sandbox: &Sandbox,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Map<String, Value>, UserInfoError> {
    let authorization = bearer_token(headers)
        .and_then(|token| sandbox.grants().access(token))
        .ok_or(UserInfoError::TokenInvalid)?;
    let query = Form::parse(uri.query().unwrap_or_default().as_bytes())?;
    let fields = query.get("fields").ok_or(UserInfoError::MissingFields)?;

    let mut user = Map::new();
    for field in fields.split(',') {
        let (name, scope) = USER_FIELDS
            .iter()
            .find(|(name, _)| *name == field)
            .ok_or_else(|| UserInfoError::UnknownField(field.to_owned()))?;
        if !authorization.grants(scope) {
            return Err(UserInfoError::ScopeNotAuthorized {
                field: field.to_owned(),
                scope,
            });
        }
        user.insert((*name).to_owned(), field_value(name, &authorization));
    }
    Ok(user)
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token)
        .filter(|token| !token.is_empty())
}

fn field_value(name: &str, authorization: &Arc<Authorization>) -> Value {
    const AVATAR: &str = "https://p16-sign.tiktokcdn-us.com/sandbox/avatar";
    match name {
        "open_id" => json!(authorization.open_id),
        "union_id" => json!(ids::union_id(SANDBOX_USER)),
        "avatar_url" => json!(format!("{AVATAR}.jpeg")),
        "avatar_url_100" => json!(format!("{AVATAR}~100x100.jpeg")),
        "avatar_large_url" => json!(format!("{AVATAR}~1080x1080.jpeg")),
        "display_name" => json!("Sandbox User"),
        "bio_description" => json!("A stand-in user of the TikTok sandbox."),
        "profile_deep_link" => json!("https://vm.tiktok.com/sandbox-user/"),
        "is_verified" => json!(false),
        "username" => json!("sandbox.user"),
        "follower_count" => json!(1200),
        "following_count" => json!(35),
        "likes_count" => json!(48_000),
        "video_count" => json!(17),
        _ => Value::Null,
    }
}
