//! The client for TikTok's v2 API and the wire types of its answers.

mod answer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::header::HeaderMap;
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use url::Url;

use crate::apps::App;
use crate::metrics::Metrics;
use crate::settings::TikTokSettings;
use answer::{RATE_LIMIT_EXCEEDED, classify_token_answer};

pub use answer::log_id_from_headers;

/// What a token request asks TikTok for. Values are forwarded unchanged.
#[derive(Debug, Clone, Copy)]
pub enum Grant<'a> {
    /// `grant_type=authorization_code`.
    AuthorizationCode {
        /// The code TikTok's authorize page issued; single-use.
        code: &'a str,
        /// The redirect URI used at authorize.
        redirect_uri: &'a str,
        /// The PKCE verifier, when the authorize leg used a challenge.
        code_verifier: Option<&'a str>,
    },
    /// `grant_type=refresh_token`.
    RefreshToken {
        /// The refresh token TikTok issued.
        refresh_token: &'a str,
    },
}

impl Grant<'_> {
    /// The `grant_type` value.
    pub fn grant_type(&self) -> &'static str {
        match self {
            Grant::AuthorizationCode { .. } => "authorization_code",
            Grant::RefreshToken { .. } => "refresh_token",
        }
    }

    /// The values that must never appear in anything the proxy writes.
    fn sensitive_values(&self) -> impl Iterator<Item = &str> {
        let values = match *self {
            Grant::AuthorizationCode {
                code,
                code_verifier,
                ..
            } => [Some(code), code_verifier],
            Grant::RefreshToken { refresh_token } => [Some(refresh_token), None],
        };
        values.into_iter().flatten()
    }
}

/// TikTok issued tokens.
#[derive(Debug)]
pub struct Tokens {
    /// TikTok's token object, byte for byte as TikTok sent it.
    pub body: Bytes,
    /// TikTok's `log_id` for the call, from the `x-tt-logid` header.
    pub log_id: Option<String>,
}

/// Why a call to TikTok did not yield tokens.
#[derive(Debug, thiserror::Error)]
pub enum TikTokError {
    /// TikTok answered an OAuth error.
    #[error("tiktok answered `{error}`: {description}")]
    OAuth {
        /// TikTok's error code, e.g. `invalid_grant`.
        error: String,
        /// TikTok's description, with any forwarded secret value removed.
        description: String,
        /// TikTok's `log_id`.
        log_id: Option<String>,
    },
    /// TikTok rate-limited the call.
    #[error("tiktok rate-limited the call")]
    RateLimited {
        /// Seconds to wait, from TikTok's `Retry-After` when it sent one.
        retry_after_seconds: Option<u64>,
        /// TikTok's `log_id`.
        log_id: Option<String>,
    },
    /// TikTok answered, but not with a token object or an OAuth error.
    #[error("tiktok answered something unusable: {reason}")]
    BadAnswer {
        /// What was wrong, without any of the answer's content.
        reason: String,
        /// TikTok's `log_id`, from its header.
        log_id: Option<String>,
    },
    /// No answer arrived within the timeout.
    #[error("tiktok did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made, or broke before an answer.
    #[error("tiktok could not be reached: {0}")]
    Unreachable(String),
}

impl TikTokError {
    /// A short, fixed name for the kind of failure, for metrics and span attributes.
    pub fn kind(&self) -> &'static str {
        match self {
            TikTokError::OAuth { .. } => "oauth_error",
            TikTokError::RateLimited { .. } => "rate_limited",
            TikTokError::BadAnswer { .. } => "bad_answer",
            TikTokError::Timeout(_) => "timeout",
            TikTokError::Unreachable(_) => "unreachable",
        }
    }

    /// Fills in the `log_id` from TikTok's header when an unusable answer carried none.
    fn or_log_id(self, header_log_id: Option<String>) -> Self {
        match self {
            TikTokError::BadAnswer { reason, log_id } => TikTokError::BadAnswer {
                reason,
                log_id: log_id.or(header_log_id),
            },
            other => other,
        }
    }

    /// TikTok's `log_id` for the failed call, when it sent one.
    pub fn log_id(&self) -> Option<&str> {
        match self {
            TikTokError::OAuth { log_id, .. }
            | TikTokError::RateLimited { log_id, .. }
            | TikTokError::BadAnswer { log_id, .. } => log_id.as_deref(),
            TikTokError::Timeout(_) | TikTokError::Unreachable(_) => None,
        }
    }
}

/// One pooled HTTPS client for TikTok, shared by every request.
#[derive(Debug, Clone)]
pub struct TikTokClient {
    http: reqwest::Client,
    token_url: Url,
    timeout: Duration,
    max_response_bytes: usize,
    metrics: Arc<Metrics>,
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the tiktok http client: {0}")]
pub struct ClientBuildError(#[from] reqwest::Error);

impl TikTokClient {
    /// A client for the endpoints and limits in `settings`.
    pub fn new(settings: &TikTokSettings, metrics: Arc<Metrics>) -> Result<Self, ClientBuildError> {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("tiktok-auth0-proxy/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_keepalive(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            http,
            token_url: settings.token_url.clone(),
            timeout: settings.timeout,
            max_response_bytes: settings.max_response_bytes,
            metrics,
        })
    }

    /// Asks TikTok's token endpoint for tokens on behalf of `app`.
    ///
    /// NB: the call is never retried. A code is single-use, and once the request's bytes may
    /// have reached TikTok a second attempt could only fail, or worse, hide the first answer.
    pub async fn exchange(&self, app: &App, grant: Grant<'_>) -> Result<Tokens, TikTokError> {
        let url = &self.token_url;
        let span = tracing::info_span!(
            "tiktok token",
            otel.name = "POST tiktok token",
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = "POST",
            http.response.status_code = Empty,
            server.address = url.host_str().unwrap_or_default(),
            server.port = i64::from(url.port_or_known_default().unwrap_or_default()),
            url.full = url.as_str(),
            error.type = Empty,
            tiktok.error = Empty,
            tiktok.log_id = Empty,
        );
        let started = Instant::now();
        let result = self
            .call_token_endpoint(app, grant, &span)
            .instrument(span.clone())
            .await;

        let (outcome, log_id) = match &result {
            Ok(tokens) => ("tokens", tokens.log_id.as_deref()),
            Err(error) => {
                span.record("otel.status_code", "error");
                span.record("error.type", error.kind());
                if let TikTokError::OAuth { error, .. } = error {
                    span.record("tiktok.error", error.as_str());
                    self.metrics.tiktok_error("token", error);
                }
                if let TikTokError::RateLimited { .. } = error {
                    self.metrics.tiktok_error("token", RATE_LIMIT_EXCEEDED);
                }
                (error.kind(), error.log_id())
            }
        };
        if let Some(log_id) = log_id {
            span.record("tiktok.log_id", log_id);
        }
        self.metrics
            .tiktok_call("token", outcome, started.elapsed());
        result
    }

    async fn call_token_endpoint(
        &self,
        app: &App,
        grant: Grant<'_>,
        span: &tracing::Span,
    ) -> Result<Tokens, TikTokError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("client_key", app.client_key()),
            ("client_secret", app.tiktok_secret().expose()),
            ("grant_type", grant.grant_type()),
        ];
        match grant {
            Grant::AuthorizationCode {
                code,
                redirect_uri,
                code_verifier,
            } => {
                form.push(("code", code));
                form.push(("redirect_uri", redirect_uri));
                if let Some(verifier) = code_verifier {
                    form.push(("code_verifier", verifier));
                }
            }
            Grant::RefreshToken { refresh_token } => form.push(("refresh_token", refresh_token)),
        }

        // W3C trace context for TikTok's side, naming this client span as the parent.
        let mut trace_headers = HeaderMap::new();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            let mut injector = opentelemetry_http::HeaderInjector(&mut trace_headers);
            propagator.inject_context(&span.context(), &mut injector);
        });

        let response = self
            .http
            .post(self.token_url.clone())
            .headers(trace_headers)
            .form(&form)
            .send()
            .await
            .map_err(|error| self.transport_error(&error))?;

        let status = response.status();
        span.record("http.response.status_code", i64::from(status.as_u16()));
        let headers = response.headers().clone();
        let header_log_id = log_id_from_headers(&headers);
        let body = self
            .read_body(response)
            .await
            .map_err(|error| error.or_log_id(header_log_id.clone()))?;

        let sensitive: Vec<&str> = grant
            .sensitive_values()
            .chain([app.tiktok_secret().expose()])
            .collect();
        classify_token_answer(status, &headers, body, header_log_id, &sensitive)
    }

    async fn read_body(&self, mut response: reqwest::Response) -> Result<Bytes, TikTokError> {
        let limit = self.max_response_bytes;
        let too_large = || TikTokError::BadAnswer {
            reason: format!("answer is larger than {limit} bytes"),
            log_id: None,
        };

        if response
            .content_length()
            .is_some_and(|length| length > limit as u64)
        {
            return Err(too_large());
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| self.transport_error(&error))?
        {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    fn transport_error(&self, error: &reqwest::Error) -> TikTokError {
        if error.is_timeout() {
            return TikTokError::Timeout(self.timeout);
        }
        if error.is_body() || error.is_decode() {
            return TikTokError::BadAnswer {
                reason: "answer was cut short".to_owned(),
                log_id: None,
            };
        }
        TikTokError::Unreachable(describe_transport_error(error))
    }
}

/// A transport error's chain of causes, without the URL (which is ours and adds nothing).
fn describe_transport_error(error: &reqwest::Error) -> String {
    let mut description = if error.is_connect() {
        "connection failed".to_owned()
    } else {
        "connection broke".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        description.push_str(": ");
        description.push_str(&cause.to_string());
        source = cause.source();
    }
    description
}
