//! The `tiktok-auth0-proxy` command: wires settings, logs, apps and listeners together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tiktok_auth0_proxy::apps::{Registry, kubernetes};
use tiktok_auth0_proxy::metrics::Metrics;
use tiktok_auth0_proxy::sandbox::{Sandbox, SandboxApp};
use tiktok_auth0_proxy::server::{Lifecycle, Listeners, Service, shutdown_signal};
use tiktok_auth0_proxy::settings::{CredentialSource, Settings};
use tiktok_auth0_proxy::telemetry::Telemetry;
use tiktok_auth0_proxy::tiktok::TikTokClient;
use tiktok_auth0_proxy::token::TokenEndpoint;
use url::Url;

/// Lets Auth0 sign users in with TikTok: a token proxy speaking TikTok Login Kit v2.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// A YAML or TOML settings file; environment variables override it.
    #[arg(long, global = true, env = "TIKTOK_AUTH0_PROXY_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Serve,
    /// Check the settings and print them, secrets masked.
    CheckConfig,
    /// Run the TikTok sandbox: a stand-in for TikTok's v2 API, for development and tests.
    Sandbox(SandboxArgs),
    /// Run the sandbox and the proxy wired to it, to see a whole exchange without a TikTok app.
    Demo,
}

#[derive(Args)]
struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, env = "SANDBOX_LISTEN", default_value = "0.0.0.0:9400")]
    listen: SocketAddr,
    /// The sandbox app's client key.
    #[arg(long, env = "SANDBOX_CLIENT_KEY", default_value = DEMO_CLIENT_KEY)]
    client_key: String,
    /// The sandbox app's client secret.
    #[arg(long, env = "SANDBOX_CLIENT_SECRET", default_value = DEMO_CLIENT_SECRET)]
    client_secret: String,
    /// Redirect URIs registered for the sandbox app.
    #[arg(
        long = "redirect-uri",
        env = "SANDBOX_REDIRECT_URIS",
        value_delimiter = ',',
        default_value = DEMO_REDIRECT_URI
    )]
    redirect_uris: Vec<String>,
}

const DEMO_CLIENT_KEY: &str = "sandbox-client-key";
const DEMO_CLIENT_SECRET: &str = "sandbox-client-secret";
const DEMO_REDIRECT_URI: &str = "https://sandbox.auth0.example/login/callback";
const DEMO_SANDBOX_ADDR: &str = "127.0.0.1:9400";

fn main() -> ExitCode {
    let cli = Cli::parse();
    tiktok_auth0_proxy::install_crypto_provider();

    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => load_settings(cli.config).and_then(|settings| run(serve(settings))),
        Command::CheckConfig => load_settings(cli.config).and_then(check_config),
        Command::Sandbox(args) => run(sandbox(args)),
        Command::Demo => run(demo()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tiktok-auth0-proxy: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn load_settings(config: Option<PathBuf>) -> anyhow::Result<Settings> {
    Ok(Settings::load(config.as_deref())?)
}

fn run(future: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

fn check_config(settings: Settings) -> anyhow::Result<()> {
    print!("{}", serde_yaml::to_string(&settings)?);
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let telemetry = Telemetry::init(&settings.log)?;
    let credentials = &settings.credentials;
    let (registry, metrics) = match credentials.source {
        CredentialSource::Static => {
            let registry = Arc::new(Registry::from_settings(&credentials.apps));
            let metrics = Arc::new(Metrics::new(registry.clone()));
            (registry, metrics)
        }
        CredentialSource::Kubernetes => {
            // The listeners come up at once, live but not ready until every Secret has
            // synced, even when the API server cannot be reached yet.
            let secrets = &credentials.kubernetes;
            let client = kubernetes::client().await?;
            let namespace = kubernetes::namespace(secrets, &client);
            let entries = secrets
                .secrets
                .iter()
                .map(|name| kubernetes::entry_name(name));
            let registry = Arc::new(Registry::new(entries));
            let metrics = Arc::new(Metrics::new(registry.clone()));
            tracing::info!(%namespace, secrets = ?secrets.secrets, "watching secrets for apps");
            kubernetes::spawn_watchers(
                client,
                &namespace,
                secrets,
                registry.clone(),
                metrics.clone(),
            );
            (registry, metrics)
        }
    };
    let listeners = Listeners::bind(&settings).await?;
    let served = serve_on(settings, registry, metrics, listeners).await;
    telemetry.shutdown().await;
    served
}

async fn serve_on(
    settings: Settings,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    listeners: Listeners,
) -> anyhow::Result<()> {
    let tiktok = TikTokClient::new(&settings.tiktok, metrics.clone())?;
    let token = TokenEndpoint::new(
        registry.clone(),
        tiktok,
        metrics.clone(),
        settings.max_request_bytes,
    );
    let service = Service {
        token: Arc::new(token),
        registry,
        lifecycle: Arc::new(Lifecycle::default()),
        metrics,
    };
    service
        .serve(listeners, settings.shutdown, shutdown_signal())
        .await?;
    Ok(())
}

async fn sandbox(args: SandboxArgs) -> anyhow::Result<()> {
    let telemetry = Telemetry::init(&Settings::default().log)?;
    let sandbox = Sandbox::new(vec![SandboxApp {
        client_key: args.client_key,
        client_secret: args.client_secret,
        redirect_uris: args.redirect_uris,
    }]);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot bind the sandbox to {}", args.listen))?;
    tracing::info!(addr = %args.listen, "tiktok sandbox ready");
    sandbox.serve(listener, shutdown_signal()).await?;
    telemetry.shutdown().await;
    Ok(())
}

/// The sandbox on a fixed local port and the proxy on its usual ports, with the sandbox's app,
/// so that a newcomer can run a whole exchange with `curl`.
async fn demo() -> anyhow::Result<()> {
    let mut settings =
        Settings::from_figment(demo_figment()).context("cannot build the demo settings")?;
    let sandbox_url = format!("http://{DEMO_SANDBOX_ADDR}");
    settings.tiktok.token_url = Url::parse(&format!("{sandbox_url}/v2/oauth/token/"))?;
    settings.tiktok.authorize_url = Url::parse(&format!("{sandbox_url}/v2/auth/authorize/"))?;
    settings.tiktok.user_info_url = Url::parse(&format!("{sandbox_url}/v2/user/info/"))?;
    let telemetry = Telemetry::init(&settings.log)?;

    let sandbox = Sandbox::new(vec![SandboxApp {
        client_key: DEMO_CLIENT_KEY.to_owned(),
        client_secret: DEMO_CLIENT_SECRET.to_owned(),
        redirect_uris: vec![DEMO_REDIRECT_URI.to_owned()],
    }]);
    let sandbox_listener = tokio::net::TcpListener::bind(DEMO_SANDBOX_ADDR)
        .await
        .with_context(|| format!("cannot bind the sandbox to {DEMO_SANDBOX_ADDR}"))?;
    // The sandbox stops after the proxy, so that requests the proxy drains can still reach it.
    let (stop_sandbox, sandbox_stopped) = tokio::sync::oneshot::channel::<()>();
    let sandbox_task = tokio::spawn(async move {
        let stopped = async {
            let _ = sandbox_stopped.await;
        };
        sandbox.serve(sandbox_listener, stopped).await
    });

    let listeners = Listeners::bind(&settings).await?;
    let public = listeners.public_addr()?;
    eprintln!(
        "\nDemo ready: the TikTok sandbox is at {sandbox_url}, the proxy at http://{public}.\n\
         Exchange a fresh sandbox code for tokens through the proxy:\n\n  {}\n",
        demo_curl(public)
    );
    let registry = Arc::new(Registry::from_settings(&settings.credentials.apps));
    let metrics = Arc::new(Metrics::new(registry.clone()));
    let served = serve_on(settings, registry, metrics, listeners).await;
    let _ = stop_sandbox.send(());
    let _ = sandbox_task.await;
    telemetry.shutdown().await;
    served
}

/// The usual layers (so `TIKTOK_AUTH0_PROXY_LISTEN` and the like still apply), with the
/// sandbox's app in place of whatever apps they list.
fn demo_figment() -> figment::Figment {
    use figment::providers::Serialized;
    let app = serde_json::json!({
        "client_key": DEMO_CLIENT_KEY,
        "client_secret": DEMO_CLIENT_SECRET,
    });
    Settings::figment(None).merge(Serialized::default("credentials.apps", [app]))
}

fn demo_curl(public: SocketAddr) -> String {
    let port = public.port();
    format!(
        "curl -s localhost:{port}/token -d grant_type=authorization_code \
         -d client_id={DEMO_CLIENT_KEY} -d client_secret={DEMO_CLIENT_SECRET} \
         -d redirect_uri={DEMO_REDIRECT_URI} \
         --data-urlencode code=$(curl -s -X POST -H 'Accept: text/plain' \
         localhost:9400/sandbox/codes)"
    )
}
