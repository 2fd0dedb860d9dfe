//! The two listeners, readiness, and graceful shutdown.
//!
//! The public listener serves Auth0 and sits behind the Ingress; the admin listener serves the
//! probes and is never routed from outside. On shutdown, readiness turns 503 first, the public
//! listener stops accepting after the drain delay, in-flight requests get the grace period to
//! finish, and the admin listener goes last.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, extract::State};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::set_header::SetResponseHeaderLayer;
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::apps::Registry;
use crate::metrics::{self, Metrics};
use crate::oauth_error::OAuthError;
use crate::settings::{Settings, ShutdownSettings};
use crate::token::TokenEndpoint;

/// Whether the process is on its way out.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
}

impl Lifecycle {
    /// Marks the process as draining: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the process is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// The two bound sockets; binding before serving lets callers learn the real ports.
#[derive(Debug)]
pub struct Listeners {
    public: TcpListener,
    admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses in `settings`.
    pub async fn bind(settings: &Settings) -> io::Result<Self> {
        let public = bind(settings.listen, "listen").await?;
        let admin = bind(settings.admin_listen, "admin_listen").await?;
        Ok(Self { public, admin })
    }

    /// The public listener's address.
    pub fn public_addr(&self) -> io::Result<SocketAddr> {
        self.public.local_addr()
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin.local_addr()
    }
}

async fn bind(addr: SocketAddr, key: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("cannot bind `{key}` address {addr}: {error}"),
        )
    })
}

/// What the listeners serve.
#[derive(Debug)]
pub struct Service {
    /// The token endpoint.
    pub token: Arc<TokenEndpoint>,
    /// The apps, for readiness.
    pub registry: Arc<Registry>,
    /// Draining state, for readiness.
    pub lifecycle: Arc<Lifecycle>,
    /// The metrics, for `/metrics`.
    pub metrics: Arc<Metrics>,
}

impl Service {
    /// The Auth0-facing routes. Every answer, error or not, carries `Cache-Control: no-store`
    /// and `Pragma: no-cache`, since token answers must never be cached (RFC 6749 5.1).
    pub fn public_router(&self) -> Router {
        self.token
            .clone()
            .routes()
            .fallback(not_found)
            .layer(middleware::from_fn(trace_request))
            .layer(SetResponseHeaderLayer::overriding(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::PRAGMA,
                HeaderValue::from_static("no-cache"),
            ))
    }

    /// The probes and the metrics. Nothing here is traced or counted as a request, so that
    /// scrapes and probes do not drown what Auth0 does.
    pub fn admin_router(&self) -> Router {
        let readiness = Arc::new(Readiness {
            registry: self.registry.clone(),
            lifecycle: self.lifecycle.clone(),
        });
        Router::new()
            .route("/livez", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz).with_state(readiness))
            .route(
                "/metrics",
                get(metrics_text).with_state(self.metrics.clone()),
            )
    }

    /// Serves both listeners until `shutdown` resolves, then shuts down as the module says.
    pub async fn serve(
        self,
        listeners: Listeners,
        settings: ShutdownSettings,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let public_addr = listeners.public_addr()?;
        let admin_addr = listeners.admin_addr()?;
        let (stop_public, public_stopped) = watch::channel(false);
        let (stop_admin, admin_stopped) = watch::channel(false);

        let public = tokio::spawn(
            axum::serve(listeners.public, self.public_router())
                .with_graceful_shutdown(changed(public_stopped))
                .into_future(),
        );
        let admin = tokio::spawn(
            axum::serve(listeners.admin, self.admin_router())
                .with_graceful_shutdown(changed(admin_stopped))
                .into_future(),
        );
        tracing::info!(%public_addr, "public listener ready");
        tracing::info!(%admin_addr, "admin listener ready");

        shutdown.await;
        self.lifecycle.start_draining();
        tracing::info!(
            drain_delay = %humantime::format_duration(settings.drain_delay),
            grace_period = %humantime::format_duration(settings.grace_period),
            "shutting down: readiness is off"
        );
        tokio::time::sleep(settings.drain_delay).await;

        let _ = stop_public.send(true);
        match tokio::time::timeout(settings.grace_period, public).await {
            Ok(result) => result.map_err(io::Error::other)??,
            Err(_) => tracing::warn!(
                grace_period = ?settings.grace_period,
                "requests still in flight at the end of the grace period were cut off"
            ),
        }

        let _ = stop_admin.send(true);
        admin.await.map_err(io::Error::other)??;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn changed(mut receiver: watch::Receiver<bool>) {
    let _ = receiver.wait_for(|stop| *stop).await;
}

struct Readiness {
    registry: Arc<Registry>,
    lifecycle: Arc<Lifecycle>,
}

#[derive(Serialize)]
struct ReadinessReport<'a> {
    ready: bool,
    draining: bool,
    apps_loaded: usize,
    not_synced: Vec<&'a str>,
    problems: Vec<Problem<'a>>,
}

#[derive(Serialize)]
struct Problem<'a> {
    source: &'a str,
    problem: &'a str,
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> impl IntoResponse {
    let snapshot = readiness.registry.snapshot();
    let draining = readiness.lifecycle.is_draining();
    let ready = snapshot.is_ready() && !draining;
    let report = ReadinessReport {
        ready,
        draining,
        apps_loaded: snapshot.app_count(),
        not_synced: snapshot.pending().collect(),
        problems: snapshot
            .problems()
            .map(|(source, problem)| Problem { source, problem })
            .collect(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), the classic Prometheus text
/// format for everything else.
async fn metrics_text(
    State(metrics): State<Arc<Metrics>>,
    request_headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let wants_openmetrics = request_headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    let openmetrics = metrics.encode();
    if wants_openmetrics {
        (
            [(header::CONTENT_TYPE, metrics::OPENMETRICS_CONTENT_TYPE)],
            openmetrics,
        )
    } else {
        let text = metrics::to_prometheus_text(&openmetrics);
        (
            [(header::CONTENT_TYPE, metrics::PROMETHEUS_CONTENT_TYPE)],
            text,
        )
    }
}

/// Opens the server span of a public request, as a child of the caller's W3C trace context
/// when it sent one, with the HTTP semantic-convention attributes. Handlers record the
/// proxy's own attributes (app, grant type, outcome, TikTok's error and log id) on it.
async fn trace_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&opentelemetry_http::HeaderExtractor(request.headers()))
    });
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = route,
        http.response.status_code = Empty,
        url.scheme = "http",
        app = Empty,
        grant_type = Empty,
        outcome = Empty,
        tiktok.error = Empty,
        tiktok.log_id = Empty,
    );
    // Only fails when no OpenTelemetry layer is installed, which is fine.
    let _ = span.set_parent(parent);

    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    // As i64: OpenTelemetry has no unsigned integers, and unsigned fields export as text.
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    response
}

async fn not_found() -> OAuthError {
    OAuthError::not_found()
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = interrupt => tracing::info!(signal = "SIGINT", "signal received"),
        () = terminate => tracing::info!(signal = "SIGTERM", "signal received"),
    }
}
