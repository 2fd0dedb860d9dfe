//! A stand-in for TikTok's v2 API that the project ships.
//!
//! The integration tests, `tiktok-auth0-proxy demo`, the local cluster and the benchmark all need
//! a TikTok that completes a real exchange without a real TikTok app. The sandbox validates
//! requests the way TikTok does (the token path's trailing slash, form bodies, `client_key`,
//! registered redirect URIs, single-use codes, refresh-token rotation, PKCE with a hex challenge)
//! and can be told to misbehave through [`Fault`]s, so the proxy's error handling can be tested
//! against every failure it must survive.
//!
//! Layout: `grants` keeps codes and tokens; `oauth` and `user_info` answer TikTok's endpoints;
//! `control` the `/sandbox/*` endpoints for runs outside Rust tests; `fault` renders faults;
//! `conn` is the accept loop that can reset or truncate a connection; `form` and `ids` parse
//! forms and mint TikTok-shaped identifiers; `router` ties the routes together.

mod conn;
mod control;
mod fault;
mod form;
mod grants;
mod ids;
mod oauth;
mod router;
mod user_info;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};

pub use fault::Fault;

use fault::FaultQueue;
use grants::Grants;

/// The scope a code gets when nobody asks for another, the one every TikTok login needs.
pub const DEFAULT_SCOPE: &str = "user.info.basic";

/// How many requests each recorder keeps. A benchmark sends millions of requests through the
/// sandbox; keeping only the most recent ones bounds its memory while tests, which send a few
/// dozen, still see every request they made.
pub const MAX_RECORDED_REQUESTS: usize = 10_000;

/// One TikTok developer app the sandbox knows: its credentials and registered redirect URIs.
#[derive(Clone)]
pub struct SandboxApp {
    /// TikTok's name for the client identifier.
    pub client_key: String,
    /// The app's secret, expected in the token and revoke request bodies.
    pub client_secret: String,
    /// The redirect URIs registered for the app; authorize and code exchange accept only these.
    pub redirect_uris: Vec<String>,
}

// Written by hand so that a stray `{:?}` can never print the secret.
impl fmt::Debug for SandboxApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxApp")
            .field("client_key", &self.client_key)
            .field("client_secret", &"<redacted>")
            .field("redirect_uris", &self.redirect_uris)
            .finish()
    }
}

/// What the sandbox's user consented to when a code was minted: the app, the redirect URI the
/// exchange must repeat, the granted scope (comma-separated) and an optional PKCE challenge (hex
/// of SHA-256 of the verifier, 64 lowercase hex characters, as TikTok documents it).
#[derive(Clone, Debug)]
pub struct CodeGrant {
    /// The app the code is issued to.
    pub client_key: String,
    /// The redirect URI used at authorize; the exchange must send exactly this value.
    pub redirect_uri: String,
    /// The granted scopes, comma-separated as TikTok writes them.
    pub scope: String,
    /// The PKCE challenge: lowercase hex of SHA-256 of the verifier.
    pub code_challenge: Option<String>,
}

/// A request as it reached the sandbox, with the body's raw bytes, so tests can prove what the
/// proxy sent byte for byte.
#[derive(Clone)]
pub struct RecordedRequest {
    /// The request method.
    pub method: Method,
    /// The path and query exactly as received.
    pub path_and_query: String,
    /// Every request header.
    pub headers: HeaderMap,
    /// The body, unparsed.
    pub body: Bytes,
}

impl RecordedRequest {
    fn new(method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> RecordedRequest {
        let path_and_query = uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
        RecordedRequest {
            method: method.clone(),
            path_and_query,
            headers: headers.clone(),
            body: body.clone(),
        }
    }
}

// Bodies and headers carry secrets, codes and tokens: a debug print shows only their shape.
impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.keys().map(|name| name.as_str()).collect();
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path", &self.path_and_query.split('?').next().unwrap_or(""))
            .field("header_names", &header_names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Why the sandbox refused to mint a code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SandboxError {
    /// No app with this client key was given to [`Sandbox::new`].
    #[error("mint code: no sandbox app has client key {0:?}")]
    UnknownApp(String),
    /// The sandbox has no apps at all, so there is no default to fall back on.
    #[error("mint code: the sandbox has no apps")]
    NoApps,
    /// The redirect URI is not registered for the app.
    #[error("mint code: redirect uri {0:?} is not registered for this app")]
    UnregisteredRedirectUri(String),
    /// The app has no redirect URI at all, so there is no default to fall back on.
    #[error("mint code: the app has no registered redirect uri")]
    NoRedirectUri,
    /// The scope is empty or not a comma-separated list (TikTok rejects spaces).
    #[error("mint code: scope must be a non-empty comma-separated list without spaces")]
    InvalidScope,
    /// The code challenge is not 64 lowercase hex characters.
    #[error("mint code: code_challenge must be 64 lowercase hex characters (sha-256 in hex)")]
    InvalidCodeChallenge,
}

/// The TikTok sandbox. Cheap to clone: every clone shares the same apps, codes, tokens, faults
/// and recorded requests, so a test can keep one clone while another serves.
#[derive(Clone)]
pub struct Sandbox {
    shared: Arc<Shared>,
}

struct Shared {
    apps: Vec<SandboxApp>,
    grants: Mutex<Grants>,
    faults: Mutex<FaultQueue>,
    token_requests: Mutex<VecDeque<RecordedRequest>>,
    user_info_requests: Mutex<VecDeque<RecordedRequest>>,
}

impl Sandbox {
    /// A sandbox that knows these apps. The first app (and its first redirect URI) is the
    /// default for `POST /sandbox/codes`.
    pub fn new(apps: Vec<SandboxApp>) -> Sandbox {
        Sandbox {
            shared: Arc::new(Shared {
                apps,
                grants: Mutex::new(Grants::default()),
                faults: Mutex::new(FaultQueue::default()),
                token_requests: Mutex::new(VecDeque::new()),
                user_info_requests: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// Serves TikTok's endpoints and the control endpoints until `shutdown` resolves, then lets
    /// requests in flight finish. It runs its own accept loop (rather than `axum::serve`) so that
    /// [`Fault::Reset`] and [`Fault::Truncated`] can act on the TCP connection itself.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        conn::serve(router::router(self.clone()), listener, shutdown).await
    }

    /// Mints an authorization code as if the user had consented at TikTok's authorize page.
    /// Fails for an unknown app, an unregistered redirect URI, a malformed scope or challenge.
    pub fn mint_code(&self, grant: CodeGrant) -> Result<String, SandboxError> {
        let app = self
            .app(&grant.client_key)
            .ok_or_else(|| SandboxError::UnknownApp(grant.client_key.clone()))?;
        if !app.redirect_uris.contains(&grant.redirect_uri) {
            return Err(SandboxError::UnregisteredRedirectUri(grant.redirect_uri));
        }
        if !grants::is_valid_scope(&grant.scope) {
            return Err(SandboxError::InvalidScope);
        }
        if grant
            .code_challenge
            .as_deref()
            .is_some_and(|c| !ids::is_code_challenge(c))
        {
            return Err(SandboxError::InvalidCodeChallenge);
        }
        Ok(self.grants().issue_code(grant))
    }

    /// Makes the next `times` requests to the token path answer with `fault` instead of (or, for
    /// [`Fault::Slow`], before) their normal answer. Faults queue up in the order injected.
    pub fn inject_fault(&self, fault: Fault, times: usize) {
        lock(&self.shared.faults).push(fault, times);
    }

    /// Drops every fault still queued.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Every request that reached the token path, in order (the most recent
    /// [`MAX_RECORDED_REQUESTS`] of them), including those that got a fault or an error.
    pub fn token_requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.token_requests).iter().cloned().collect()
    }

    /// Every request that reached the user info path, in order (the most recent
    /// [`MAX_RECORDED_REQUESTS`] of them).
    pub fn user_info_requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.user_info_requests)
            .iter()
            .cloned()
            .collect()
    }

    fn app(&self, client_key: &str) -> Option<&SandboxApp> {
        self.shared
            .apps
            .iter()
            .find(|app| app.client_key == client_key)
    }

    fn first_app(&self) -> Option<&SandboxApp> {
        self.shared.apps.first()
    }

    fn grants(&self) -> MutexGuard<'_, Grants> {
        lock(&self.shared.grants)
    }

    fn take_fault(&self) -> Option<Fault> {
        lock(&self.shared.faults).take()
    }

    fn record_token_request(&self, request: RecordedRequest) {
        record(&self.shared.token_requests, request);
    }

    fn record_user_info_request(&self, request: RecordedRequest) {
        record(&self.shared.user_info_requests, request);
    }
}

fn record(requests: &Mutex<VecDeque<RecordedRequest>>, request: RecordedRequest) {
    let mut requests = lock(requests);
    if requests.len() == MAX_RECORDED_REQUESTS {
        requests.pop_front();
    }
    requests.push_back(request);
}

/// Locks ignoring poison: the state stays consistent between statements, and a panic in one
/// handler must not turn every later request into a panic too.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
