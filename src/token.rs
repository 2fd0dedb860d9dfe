//! The token endpoint Auth0 calls: checks the request, asks TikTok, answers RFC 6749.
//!
//! Checks run in a fixed order (the body, then the client, then the grant type, then the
//! grant's own parameters) and nothing reaches TikTok before all of them pass, so the proxy is
//! never a relay for anyone who does not hold Auth0's secret for a loaded app.

mod params;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::apps::{App, Registry};
use crate::metrics::Metrics;
use crate::oauth_error::OAuthError;
use crate::tiktok::{Grant, TikTokClient, TikTokError};

pub use params::{ClientCredentials, Params};

/// Seconds Auth0 is asked to wait when TikTok rate-limits without saying for how long.
const DEFAULT_RETRY_AFTER_SECONDS: u64 = 5;

/// Longest wait the proxy passes on from TikTok's `Retry-After`.
const MAX_RETRY_AFTER_SECONDS: u64 = 3600;

/// What the token endpoint needs, shared by every request.
#[derive(Debug)]
pub struct TokenEndpoint {
    registry: Arc<Registry>,
    tiktok: TikTokClient,
    metrics: Arc<Metrics>,
    max_request_bytes: usize,
}

impl TokenEndpoint {
    /// An endpoint serving the apps in `registry` through `tiktok`.
    pub fn new(
        registry: Arc<Registry>,
        tiktok: TikTokClient,
        metrics: Arc<Metrics>,
        max_request_bytes: usize,
    ) -> Self {
        Self {
            registry,
            tiktok,
            metrics,
            max_request_bytes,
        }
    }

    /// The routes: `/token`, and `/proxy/token` where the older sample proxy served it, so a
    /// migrating tenant only changes the host.
    pub fn routes(self: Arc<Self>) -> Router {
        let method_router = post(token).fallback(method_not_allowed);
        Router::new()
            .route("/token", method_router.clone())
            .route("/proxy/token", method_router)
            .with_state(self)
    }
}

/// How a token request ended, as logs and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// TikTok issued tokens.
    Issued,
    /// The request was malformed.
    InvalidRequest,
    /// The client could not be authenticated.
    InvalidClient,
    /// The grant type is not one the proxy forwards.
    UnsupportedGrantType,
    /// No app is loaded yet.
    Unavailable,
    /// TikTok answered an OAuth error.
    TikTokError,
    /// TikTok rate-limited the call.
    RateLimited,
    /// TikTok answered something unusable or could not be reached.
    UpstreamFailed,
    /// TikTok did not answer in time.
    UpstreamTimeout,
}

impl Outcome {
    /// The outcome's name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Issued => "issued",
            Outcome::InvalidRequest => "invalid_request",
            Outcome::InvalidClient => "invalid_client",
            Outcome::UnsupportedGrantType => "unsupported_grant_type",
            Outcome::Unavailable => "unavailable",
            Outcome::TikTokError => "tiktok_error",
            Outcome::RateLimited => "rate_limited",
            Outcome::UpstreamFailed => "upstream_failed",
            Outcome::UpstreamTimeout => "upstream_timeout",
        }
    }
}

/// What is known about a request as it goes, for its log line.
#[derive(Debug, Default)]
struct Facts {
    app: Option<String>,
    grant_type: Option<&'static str>,
    tiktok_error: Option<String>,
    log_id: Option<String>,
}

impl Facts {
    /// Writes what is known about the request onto its server span (opened by the public
    /// router for every request) and into its one log line.
    fn report(&self, outcome: Outcome, status: StatusCode, elapsed: Duration) {
        let span = tracing::Span::current();
        span.record("outcome", outcome.as_str());
        if let Some(app) = &self.app {
            span.record("app", app.as_str());
        }
        if let Some(grant_type) = self.grant_type {
            span.record("grant_type", grant_type);
        }
        if let Some(error) = &self.tiktok_error {
            span.record("tiktok.error", error.as_str());
        }
        if let Some(log_id) = &self.log_id {
            span.record("tiktok.log_id", log_id.as_str());
        }

        tracing::info!(
            app = self.app.as_deref(),
            grant_type = self.grant_type,
            outcome = outcome.as_str(),
            status = i64::from(status.as_u16()),
            tiktok_error = self.tiktok_error.as_deref(),
            log_id = self.log_id.as_deref(),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "token request"
        );
    }
}

/// An early end to a request, with the outcome it counts as.
struct Refusal {
    outcome: Outcome,
    error: OAuthError,
}

impl Refusal {
    fn new(outcome: Outcome, error: OAuthError) -> Self {
        Self { outcome, error }
    }

    fn invalid_request(error: OAuthError) -> Self {
        Self::new(Outcome::InvalidRequest, error)
    }
}

async fn token(
    State(endpoint): State<Arc<TokenEndpoint>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let mut facts = Facts::default();

    let (outcome, response) = match endpoint.exchange(&headers, body, &mut facts).await {
        Ok(body) => (Outcome::Issued, tokens_response(body)),
        Err(refusal) => (refusal.outcome, refusal.error.into_response()),
    };

    let elapsed = started.elapsed();
    endpoint
        .metrics
        .request("token", facts.grant_type, outcome.as_str(), elapsed);
    facts.report(outcome, response.status(), elapsed);
    response
}

impl TokenEndpoint {
    async fn exchange(
        &self,
        headers: &HeaderMap,
        body: Body,
        facts: &mut Facts,
    ) -> Result<Bytes, Refusal> {
        let body = self.read_body(headers, body).await?;
        let params = params::parse_body(headers, &body).map_err(Refusal::invalid_request)?;

        let app = self.authenticate(headers, &params, facts)?;

        let grant = read_grant(&params, facts)?;

        let tokens = self.tiktok.exchange(&app, grant).await.map_err(|error| {
            facts.log_id = error.log_id().map(str::to_owned);
            if let TikTokError::OAuth { error, .. } = &error {
                facts.tiktok_error = Some(error.clone());
            }
            tiktok_refusal(&app, error)
        })?;
        facts.log_id = tokens.log_id;
        Ok(tokens.body)
    }

    async fn read_body(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, Refusal> {
        let limit = self.max_request_bytes;
        let too_large = || Refusal::invalid_request(OAuthError::body_too_large(limit));

        let declared_length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared_length.is_some_and(|length| length > limit as u64) {
            return Err(too_large());
        }

        match Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
            Err(_) => Err(Refusal::invalid_request(OAuthError::invalid_request(
                "request body could not be read",
            ))),
        }
    }

    fn authenticate(
        &self,
        headers: &HeaderMap,
        params: &Params,
        facts: &mut Facts,
    ) -> Result<Arc<App>, Refusal> {
        let credentials = params::client_credentials(headers, params).map_err(|error| {
            let outcome = if error.status() == StatusCode::UNAUTHORIZED {
                Outcome::InvalidClient
            } else {
                Outcome::InvalidRequest
            };
            Refusal::new(outcome, error)
        })?;
        let Some(credentials) = credentials else {
            let error = OAuthError::invalid_client(
                "client authentication is required: send client_id and client_secret",
            );
            return Err(Refusal::new(Outcome::InvalidClient, error));
        };

        let snapshot = self.registry.snapshot();
        if snapshot.app_count() == 0 {
            let error = OAuthError::temporarily_unavailable("no TikTok app is loaded yet");
            return Err(Refusal::new(
                Outcome::Unavailable,
                error.with_retry_after(1),
            ));
        }

        let app = snapshot
            .app(&credentials.id)
            .filter(|app| app.accepts_auth0_secret(&credentials.secret));
        let Some(app) = app else {
            let known = snapshot.app(&credentials.id).is_some();
            tracing::debug!(known_client_id = known, "client authentication failed");
            let mut error = OAuthError::invalid_client("client authentication failed");
            if credentials.via_basic {
                error = error.with_basic_challenge();
            }
            return Err(Refusal::new(Outcome::InvalidClient, error));
        };
        facts.app = Some(app.client_key().to_owned());
        Ok(app.clone())
    }
}

fn read_grant<'a>(params: &'a Params, facts: &mut Facts) -> Result<Grant<'a>, Refusal> {
    let required = |name| params.require(name).map_err(Refusal::invalid_request);
    let grant_type = required("grant_type")?;
    // Known before the grant's parameters are checked, so a request missing one of them is
    // still counted under its grant type.
    facts.grant_type = match grant_type {
        "authorization_code" => Some("authorization_code"),
        "refresh_token" => Some("refresh_token"),
        _ => {
            let error = OAuthError::unsupported_grant_type(
                "grant_type must be authorization_code or refresh_token",
            );
            return Err(Refusal::new(Outcome::UnsupportedGrantType, error));
        }
    };

    if grant_type == "authorization_code" {
        Ok(Grant::AuthorizationCode {
            code: required("code")?,
            redirect_uri: required("redirect_uri")?,
            code_verifier: params.get("code_verifier"),
        })
    } else {
        Ok(Grant::RefreshToken {
            refresh_token: required("refresh_token")?,
        })
    }
}

/// Turns a failed TikTok call into the answer for Auth0, keeping TikTok's reason and log id.
fn tiktok_refusal(app: &App, error: TikTokError) -> Refusal {
    let log_id = error.log_id().map(str::to_owned);
    let (outcome, answer) = match error {
        TikTokError::OAuth {
            error, description, ..
        } => (
            Outcome::TikTokError,
            tiktok_oauth_error(app, error, description),
        ),
        TikTokError::RateLimited {
            retry_after_seconds,
            ..
        } => {
            let seconds = retry_after_seconds
                .unwrap_or(DEFAULT_RETRY_AFTER_SECONDS)
                .clamp(1, MAX_RETRY_AFTER_SECONDS);
            let answer = OAuthError::temporarily_unavailable("TikTok rate-limited the request")
                .with_retry_after(seconds);
            (Outcome::RateLimited, answer)
        }
        TikTokError::BadAnswer { reason, .. } => {
            tracing::warn!(app = app.client_key(), %reason, "tiktok answered something unusable");
            let description = format!("TikTok's answer was not an OAuth answer ({reason})");
            let answer = OAuthError::new(StatusCode::BAD_GATEWAY, "server_error", description);
            (Outcome::UpstreamFailed, answer)
        }
        TikTokError::Unreachable(cause) => {
            tracing::warn!(app = app.client_key(), %cause, "tiktok could not be reached");
            let answer = OAuthError::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "TikTok could not be reached",
            );
            (Outcome::UpstreamFailed, answer)
        }
        TikTokError::Timeout(timeout) => {
            tracing::warn!(
                app = app.client_key(),
                ?timeout,
                "tiktok did not answer in time"
            );
            let description = format!("TikTok did not answer within {timeout:?}");
            let answer = OAuthError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "temporarily_unavailable",
                description,
            );
            (Outcome::UpstreamTimeout, answer)
        }
    };
    Refusal::new(outcome, answer.with_log_id(log_id))
}

fn tiktok_oauth_error(app: &App, error: String, description: String) -> OAuthError {
    match error.as_str() {
        "invalid_client" => {
            // TikTok refused the proxy's own credentials for the app: an operator must fix the
            // app's TikTok secret, so say so where they look.
            tracing::warn!(
                app = app.client_key(),
                "tiktok rejected the app's client key or secret held by the proxy"
            );
            let description = format!(
                "TikTok rejected the client key or secret the proxy holds for this app: \
                 {description}"
            );
            OAuthError::invalid_client(description)
        }
        "temporarily_unavailable" => OAuthError::temporarily_unavailable(description),
        "server_error" => OAuthError::new(StatusCode::BAD_GATEWAY, error, description),
        _ => OAuthError::new(StatusCode::BAD_REQUEST, error, description),
    }
}

fn tokens_response(body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    let json = HeaderValue::from_static("application/json");
    response.headers_mut().insert(header::CONTENT_TYPE, json);
    response
}

async fn method_not_allowed() -> OAuthError {
    OAuthError::method_not_allowed()
}
