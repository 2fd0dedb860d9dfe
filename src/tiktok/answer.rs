//! Reading TikTok's token answer: tokens, an OAuth error, a rate limit, or something unusable.

use bytes::Bytes;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use serde_json::Value;

use super::{TikTokError, Tokens};

/// The TikTok error code that means "too many requests", in whichever shape it arrives.
pub(super) const RATE_LIMIT_EXCEEDED: &str = "rate_limit_exceeded";

/// Longest `error_description` or `log_id` passed on from TikTok.
const MAX_PASSED_ON_CHARS: usize = 512;

/// The flat fields TikTok's token endpoint may send; anything else is passed through untouched.
#[derive(Deserialize)]
struct TokenAnswerFields {
    #[serde(default)]
    access_token: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    error_description: Option<Value>,
    #[serde(default)]
    log_id: Option<Value>,
}

/// Decides what TikTok's token answer means by its body, since TikTok has been seen sending
/// errors with HTTP 200: tokens need a 2xx status, a non-empty `access_token` and no `error`.
pub(super) fn classify_token_answer(
    status: reqwest::StatusCode,
    headers: &HeaderMap,
    body: Bytes,
    header_log_id: Option<String>,
    sensitive: &[&str],
) -> Result<Tokens, TikTokError> {
    let retry_after_seconds = headers
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok());
    let parsed: Option<TokenAnswerFields> = serde_json::from_slice::<Value>(&body)
        .ok()
        .filter(Value::is_object)
        .and_then(|value| serde_json::from_value(value).ok());

    let Some(fields) = parsed else {
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(TikTokError::RateLimited {
                retry_after_seconds,
                log_id: header_log_id,
            });
        }
        return Err(TikTokError::BadAnswer {
            reason: format!("HTTP {} without a JSON object", status.as_u16()),
            log_id: header_log_id,
        });
    };

    let log_id = fields
        .log_id
        .as_ref()
        .and_then(non_empty_str)
        .map(|log_id| clean_text(log_id, &[]))
        .or_else(|| error_envelope_field(fields.error.as_ref(), "log_id"))
        .or(header_log_id);
    let (error, envelope_message) = match &fields.error {
        Some(Value::String(error)) if !error.is_empty() => (Some(error.as_str()), None),
        // TikTok's other APIs wrap errors as {"error": {"code", "message", "log_id"}}, with
        // `ok` meaning success; a token answer in that shape is read the same way.
        Some(Value::Object(envelope)) => {
            let code = envelope.get("code").and_then(Value::as_str);
            let code = code.filter(|code| !code.is_empty() && *code != "ok");
            (code, envelope.get("message").and_then(Value::as_str))
        }
        _ => (None, None),
    };

    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || error == Some(RATE_LIMIT_EXCEEDED) {
        return Err(TikTokError::RateLimited {
            retry_after_seconds,
            log_id,
        });
    }
    if let Some(error) = error {
        let description = fields
            .error_description
            .as_ref()
            .and_then(non_empty_str)
            .or(envelope_message)
            .unwrap_or("tiktok gave no description");
        return Err(TikTokError::OAuth {
            error: clean_error_code(error),
            description: clean_text(description, sensitive),
            log_id,
        });
    }

    let has_token = fields
        .access_token
        .as_ref()
        .and_then(non_empty_str)
        .is_some();
    if has_token && status.is_success() {
        return Ok(Tokens { body, log_id });
    }
    let reason = if has_token {
        format!("HTTP {} with a token object", status.as_u16())
    } else {
        format!("HTTP {} without `access_token` or `error`", status.as_u16())
    };
    Err(TikTokError::BadAnswer { reason, log_id })
}

fn non_empty_str(value: &Value) -> Option<&str> {
    value.as_str().filter(|text| !text.is_empty())
}

fn error_envelope_field(error: Option<&Value>, field: &str) -> Option<String> {
    let value = error?.as_object()?.get(field)?;
    non_empty_str(value).map(|text| clean_text(text, &[]))
}

/// TikTok's log id from the `x-tt-logid` header.
pub fn log_id_from_headers(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("x-tt-logid")?.to_str().ok()?;
    (!value.is_empty()).then(|| clean_text(value, &[]))
}

/// An RFC 6749 error code may hold only printable ASCII without `"` and `\`; anything else
/// TikTok might send is not a code Auth0 could show, so it becomes `server_error`.
fn clean_error_code(error: &str) -> String {
    let valid = error.len() <= 64
        && error
            .bytes()
            .all(|byte| matches!(byte, 0x20..=0x7e) && byte != b'"' && byte != b'\\');
    if valid {
        error.to_owned()
    } else {
        "server_error".to_owned()
    }
}

/// Values shorter than this are not masked: they cannot be real secrets, codes or tokens, and
/// masking them would mangle ordinary words in TikTok's text.
const MIN_MASKED_CHARS: usize = 6;

/// Text from TikTok, made safe to pass on: control characters dropped, length capped, and
/// any value the proxy forwarded (a secret, code, verifier or token) masked, in case TikTok
/// echoes one back.
fn clean_text(text: &str, sensitive: &[&str]) -> String {
    let mut cleaned: String = text
        .chars()
        .filter(|character| !character.is_control())
        .take(MAX_PASSED_ON_CHARS)
        .collect();
    for value in sensitive
        .iter()
        .filter(|value| value.len() >= MIN_MASKED_CHARS)
    {
        cleaned = cleaned.replace(value, "[redacted]");
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn classify(status: u16, body: &str) -> Result<Tokens, TikTokError> {
        let status = StatusCode::from_u16(status).unwrap();
        let body = Bytes::from(body.to_owned());
        classify_token_answer(status, &HeaderMap::new(), body, None, &["the-code"])
    }

    #[test]
    fn an_error_with_http_200_is_an_error() {
        let answer = classify(
            200,
            r#"{"error":"invalid_grant","error_description":"used","log_id":"L1"}"#,
        );
        let Err(TikTokError::OAuth { error, log_id, .. }) = answer else {
            panic!("expected an OAuth error, got {answer:?}");
        };
        assert_eq!(error, "invalid_grant");
        assert_eq!(log_id.as_deref(), Some("L1"));
    }

    #[test]
    fn tokens_need_an_access_token_and_a_2xx() {
        assert!(classify(200, r#"{"access_token":"act.x","open_id":"o"}"#).is_ok());
        assert!(matches!(
            classify(200, r#"{"access_token":""}"#),
            Err(TikTokError::BadAnswer { .. })
        ));
        assert!(matches!(
            classify(500, r#"{"access_token":"act.x"}"#),
            Err(TikTokError::BadAnswer { .. })
        ));
        assert!(matches!(
            classify(200, "<html>"),
            Err(TikTokError::BadAnswer { .. })
        ));
        assert!(matches!(
            classify(200, "[1]"),
            Err(TikTokError::BadAnswer { .. })
        ));
    }

    #[test]
    fn rate_limits_are_recognised_in_every_shape() {
        for (status, body) in [
            (429, "too many"),
            (200, r#"{"error":"rate_limit_exceeded"}"#),
            (
                400,
                r#"{"error":{"code":"rate_limit_exceeded","message":"slow down"}}"#,
            ),
        ] {
            let answer = classify(status, body);
            assert!(
                matches!(answer, Err(TikTokError::RateLimited { .. })),
                "{status} {body}"
            );
        }
    }

    #[test]
    fn an_ok_envelope_is_not_an_error() {
        let body = r#"{"access_token":"act.x","error":{"code":"ok","message":""}}"#;
        assert!(classify(200, body).is_ok());
    }

    #[test]
    fn echoed_values_are_masked() {
        let body = r#"{"error":"invalid_grant","error_description":"code the-code is used"}"#;
        let Err(TikTokError::OAuth { description, .. }) = classify(400, body) else {
            panic!("expected an OAuth error");
        };
        assert_eq!(description, "code [redacted] is used");
    }

    #[test]
    fn values_too_short_to_be_secrets_are_not_masked() {
        assert_eq!(
            clean_text("Client secret is wrong", &["s", "the-code"]),
            "Client secret is wrong"
        );
    }

    #[test]
    fn a_strange_error_code_becomes_server_error() {
        let Err(TikTokError::OAuth { error, .. }) = classify(400, r#"{"error":"bad\"code"}"#)
        else {
            panic!("expected an OAuth error");
        };
        assert_eq!(error, "server_error");
    }
}
