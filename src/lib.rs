//! tiktok-auth0-proxy: lets an Auth0 tenant sign users in with TikTok.
//!
//! Auth0's custom social connections speak standard OAuth 2.0, while TikTok's Login Kit names
//! the client identifier `client_key`. This crate is the small, stateless service that sits on
//! Auth0's Token URL and speaks TikTok v2 on the other side. `main.rs` only wires the pieces:
//!
//! - [`settings`] holds layered configuration.
//! - [`apps`] holds the registry of TikTok apps and the sources that fill it.
//! - [`token`] and [`oauth_error`] hold the Auth0-facing token endpoint and its RFC 6749 answers.
//! - [`tiktok`] holds the client for TikTok's v2 API and its wire types.
//! - [`metrics`] holds the Prometheus metrics.
//! - [`server`] holds the public and admin listeners, readiness and graceful shutdown.
//! - [`telemetry`] sets up logs.
//! - [`sandbox`] holds a stand-in for TikTok used by the tests, the demo and the local cluster.

pub mod apps;
pub mod metrics;
pub mod oauth_error;
pub mod sandbox;
pub mod secret;
pub mod server;
pub mod settings;
pub mod telemetry;
pub mod tiktok;
pub mod token;

/// Installs rustls's `ring` provider as the process default. Every TLS client in the process
/// (reqwest's and kube's) needs one, and two linked providers would leave rustls unable to pick;
/// calling this again does nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
