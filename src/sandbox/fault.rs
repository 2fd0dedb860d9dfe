//! Ways the sandbox misbehaves on request, and what each looks like on the wire.

use std::collections::VecDeque;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use super::grants::TokenBody;
use super::router::{flat_error, html_page, json_response};

/// How long a rate-limited client is told to wait. TikTok counts its limits per minute.
const RETRY_AFTER_SECONDS: &str = "60";

/// A misbehaviour of TikTok's token endpoint, for testing what the proxy does with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A TikTok OAuth error body sent with this HTTP status (200 models TikTok's "error with 200").
    OAuthError {
        /// The HTTP status to send.
        status: u16,
        /// The OAuth error category, e.g. `invalid_grant`.
        error: String,
        /// The `error_description`.
        description: String,
    },
    /// `rate_limit_exceeded`: with 429 (and `Retry-After`), or in the body of any other status.
    RateLimited {
        /// The HTTP status to send.
        status: u16,
    },
    /// An HTML 500 page, as a failing load balancer sends.
    Html500,
    /// 200 with a body that claims to be JSON and is not.
    Garbage,
    /// A `Content-Length` larger than the body, then the connection closes.
    Truncated,
    /// The normal answer, after this delay.
    Slow(Duration),
    /// A TCP RST without any response bytes.
    Reset,
    /// A 200 JSON token body of about this many bytes.
    Oversized(usize),
}

/// What the token handler must do for a fault.
pub(super) enum FaultAction {
    /// Wait, then answer normally.
    Delay(Duration),
    /// Send this instead of the normal answer.
    Answer(Response),
    /// Reset the connection without answering.
    Reset,
    /// Send this, but only `keep_body_bytes` of its body, then close.
    Truncate {
        answer: Response,
        keep_body_bytes: usize,
    },
}

impl Fault {
    /// How the fault plays out for one request with this log id.
    pub(super) fn action(&self, log_id: &str) -> FaultAction {
        match self {
            Fault::Slow(delay) => FaultAction::Delay(*delay),
            Fault::Reset => FaultAction::Reset,
            Fault::OAuthError {
                status,
                error,
                description,
            } => FaultAction::Answer(flat_error(status_code(*status), error, description, log_id)),
            Fault::RateLimited { status } => FaultAction::Answer(rate_limited(*status, log_id)),
            Fault::Html500 => FaultAction::Answer(html_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "500 Internal Server Error",
            )),
            Fault::Garbage => {
                // Labelled JSON on purpose, so a client must judge the body, not the header.
                let mut answer =
                    (StatusCode::OK, "<<sandbox garbage>> \u{1}not json at all").into_response();
                answer.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                FaultAction::Answer(answer)
            }
            Fault::Truncated => {
                let body = serde_json::to_vec(&TokenBody::unregistered()).unwrap_or_default();
                let keep_body_bytes = body.len() / 2;
                let answer = json_response(StatusCode::OK, body);
                FaultAction::Truncate {
                    answer,
                    keep_body_bytes,
                }
            }
            Fault::Oversized(bytes) => {
                FaultAction::Answer(json_response(StatusCode::OK, oversized_body(*bytes)))
            }
        }
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST)
}

fn rate_limited(status: u16, log_id: &str) -> Response {
    let status = status_code(status);
    let mut answer = flat_error(
        status,
        "rate_limit_exceeded",
        "too many requests, try again later",
        log_id,
    );
    if status == StatusCode::TOO_MANY_REQUESTS {
        answer.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
    }
    answer
}

/// A real-looking token answer padded to about `bytes`, so a client that trusts it would hold
/// the whole thing in memory.
fn oversized_body(bytes: usize) -> Vec<u8> {
    let mut body = serde_json::to_value(TokenBody::unregistered()).unwrap_or_default();
    let base = body.to_string().len() + r#","sandbox_padding":"""#.len();
    if let Some(fields) = body.as_object_mut() {
        let padding = "x".repeat(bytes.saturating_sub(base));
        fields.insert(
            "sandbox_padding".to_owned(),
            serde_json::Value::String(padding),
        );
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Faults waiting for token requests, in the order injected.
#[derive(Default)]
pub(super) struct FaultQueue {
    pending: VecDeque<(Fault, usize)>,
}

impl FaultQueue {
    /// Queues `fault` for the next `times` requests, after those already queued.
    pub(super) fn push(&mut self, fault: Fault, times: usize) {
        if times > 0 {
            self.pending.push_back((fault, times));
        }
    }

    /// Forgets every queued fault.
    pub(super) fn clear(&mut self) {
        self.pending.clear();
    }

    /// The fault for the next request, if any; each fault serves its `times` and then goes.
    pub(super) fn take(&mut self) -> Option<Fault> {
        let (fault, times) = self.pending.front_mut()?;
        let fault_now = fault.clone();
        *times -= 1;
        if *times == 0 {
            self.pending.pop_front();
        }
        Some(fault_now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_serves_each_fault_its_times_in_order() {
        let mut queue = FaultQueue::default();
        queue.push(Fault::Reset, 2);
        queue.push(Fault::Garbage, 0);
        queue.push(Fault::Html500, 1);
        assert_eq!(queue.take(), Some(Fault::Reset));
        assert_eq!(queue.take(), Some(Fault::Reset));
        assert_eq!(queue.take(), Some(Fault::Html500));
        assert_eq!(queue.take(), None);
    }

    #[test]
    fn oversized_body_is_about_the_size_asked_and_still_json() {
        let body = oversized_body(100_000);
        assert!((100_000..100_100).contains(&body.len()), "{}", body.len());
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(parsed["access_token"].as_str().unwrap().starts_with("act."));
    }
}
