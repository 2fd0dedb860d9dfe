//! Shared test support: the TikTok sandbox and the proxy, each served on loopback.
#![allow(dead_code)]

pub mod kube_api;
pub mod otlp;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tiktok_auth0_proxy::apps::Registry;
use tiktok_auth0_proxy::metrics::Metrics;
use tiktok_auth0_proxy::sandbox::{CodeGrant, Sandbox, SandboxApp};
use tiktok_auth0_proxy::server::{Lifecycle, Listeners, Service};
use tiktok_auth0_proxy::settings::{AppSettings, Settings};
use tiktok_auth0_proxy::tiktok::TikTokClient;
use tiktok_auth0_proxy::token::TokenEndpoint;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The redirect URI registered for every sandbox app.
pub const REDIRECT_URI: &str = "https://tenant.example.auth0.com/login/callback";

/// App A: Auth0 presents the TikTok secret itself.
pub const APP_A_KEY: &str = "awtestappalpha";
pub const APP_A_SECRET: &str = "secret-app-a-TIKTOK-9f3c1e";

/// App B: Auth0 presents a secret of its own; the TikTok secret never leaves the proxy.
pub const APP_B_KEY: &str = "awtestappbravo";
pub const APP_B_SECRET: &str = "secret-app-b-TIKTOK-77d2aa";
pub const APP_B_AUTH0_SECRET: &str = "secret-app-b-AUTH0-41be0c";

/// How long a test waits for something that should happen at once.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A reqwest client for talking to the proxy and the sandbox.
pub fn http() -> reqwest::Client {
    tiktok_auth0_proxy::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds")
}

/// The TikTok sandbox, serving on a loopback port until dropped.
pub struct TestSandbox {
    pub sandbox: Sandbox,
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl TestSandbox {
    /// A sandbox that knows apps A and B.
    pub async fn start() -> Self {
        let sandbox = Sandbox::new(vec![
            SandboxApp {
                client_key: APP_A_KEY.into(),
                client_secret: APP_A_SECRET.into(),
                redirect_uris: vec![REDIRECT_URI.into()],
            },
            SandboxApp {
                client_key: APP_B_KEY.into(),
                client_secret: APP_B_SECRET.into(),
                redirect_uris: vec![REDIRECT_URI.into()],
            },
        ]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = sandbox.clone();
        tokio::spawn(async move {
            let _ = server
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            sandbox,
            addr,
            _stop: stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A fresh code for `client_key`, as TikTok's authorize page would issue it.
    pub fn code(&self, client_key: &str) -> String {
        self.code_with_challenge(client_key, None)
    }

    /// Makes TikTok's next token answer the OAuth error `error`, sent with HTTP `status`.
    pub fn next_token_answer_is_error(&self, status: u16, error: &str) {
        let fault = tiktok_auth0_proxy::sandbox::Fault::OAuthError {
            status,
            error: error.into(),
            description: format!("sandbox says {error}"),
        };
        self.sandbox.inject_fault(fault, 1);
    }

    pub fn code_with_challenge(&self, client_key: &str, challenge: Option<String>) -> String {
        self.sandbox
            .mint_code(CodeGrant {
                client_key: client_key.into(),
                redirect_uri: REDIRECT_URI.into(),
                scope: "user.info.basic,user.info.profile".into(),
                code_challenge: challenge,
            })
            .expect("the sandbox mints a code")
    }
}

/// Settings for a proxy on loopback ports, talking to `sandbox`, serving apps A and B.
pub fn settings_for(sandbox: &TestSandbox) -> Settings {
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        ..Settings::default()
    };
    settings.tiktok.token_url = sandbox.url("/v2/oauth/token/").parse().unwrap();
    settings.tiktok.authorize_url = sandbox.url("/v2/auth/authorize/").parse().unwrap();
    settings.tiktok.user_info_url = sandbox.url("/v2/user/info/").parse().unwrap();
    settings.tiktok.timeout = Duration::from_secs(2);
    settings.shutdown.grace_period = Duration::from_secs(10);
    settings.credentials.apps = vec![
        app(APP_A_KEY, APP_A_SECRET, None),
        app(APP_B_KEY, APP_B_SECRET, Some(APP_B_AUTH0_SECRET)),
    ];
    settings
}

pub fn app(key: &str, secret: &str, auth0_secret: Option<&str>) -> AppSettings {
    serde_json::from_value(serde_json::json!({
        "client_key": key,
        "client_secret": secret,
        "auth0_client_secret": auth0_secret,
    }))
    .unwrap()
}

/// The proxy's real router and listeners, served in this process on loopback.
pub struct TestProxy {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestProxy {
    /// A proxy serving the apps listed in `settings`.
    pub async fn start(settings: Settings) -> Self {
        let registry = Arc::new(Registry::from_settings(&settings.credentials.apps));
        Self::start_with_registry(settings, registry).await
    }

    /// A proxy serving whatever `registry` holds.
    pub async fn start_with_registry(settings: Settings, registry: Arc<Registry>) -> Self {
        let listeners = Listeners::bind(&settings).await.unwrap();
        let public = listeners.public_addr().unwrap();
        let admin = listeners.admin_addr().unwrap();
        let metrics = Arc::new(Metrics::new(registry.clone()));
        let tiktok = TikTokClient::new(&settings.tiktok, metrics.clone()).unwrap();
        let token = TokenEndpoint::new(
            registry.clone(),
            tiktok,
            metrics.clone(),
            settings.max_request_bytes,
        );
        let service = Service {
            token: Arc::new(token),
            registry: registry.clone(),
            lifecycle: Arc::new(Lifecycle::default()),
            metrics: metrics.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(service.serve(listeners, settings.shutdown, async {
            let _ = stopped.await;
        }));
        Self {
            public,
            admin,
            registry,
            metrics,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Starts the shutdown sequence, as SIGTERM would.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the shutdown sequence to end.
    pub async fn stopped(&mut self) -> std::io::Result<()> {
        self.task.take().expect("not awaited yet").await.unwrap()
    }
}

/// A token exchange's answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            body,
            text,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts an RFC 6749 error answer with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, error: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.body["error"], error, "{self:?}");
        assert!(self.body["error_description"].is_string(), "{self:?}");
        assert_eq!(self.header("cache-control"), Some("no-store"), "{self:?}");
        assert_eq!(self.header("pragma"), Some("no-cache"), "{self:?}");
        assert!(
            self.header("content-type")
                .unwrap_or_default()
                .starts_with("application/json"),
            "{self:?}"
        );
    }
}

/// Posts `form` to `url` as Auth0 does.
pub async fn post_form(url: &str, form: &[(&str, &str)]) -> Answer {
    Answer::read(http().post(url).form(form).send().await.unwrap()).await
}

/// The form Auth0 sends for an authorization code.
pub fn code_form<'a>(key: &'a str, secret: &'a str, code: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "authorization_code"),
        ("client_id", key),
        ("client_secret", secret),
        ("code", code),
        ("redirect_uri", REDIRECT_URI),
    ]
}

/// Polls `check` until it holds or the deadline passes.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The proxy binary, run as a child process.
pub struct ProxyProcess {
    pub child: tokio::process::Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ProxyProcess {
    /// Starts the binary with `env` and waits until it logs both listeners.
    pub async fn start(env: &[(&str, String)]) -> Self {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tiktok-auth0-proxy"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TIKTOK_AUTH0_PROXY_LISTEN", "127.0.0.1:0")
            .env("TIKTOK_AUTH0_PROXY_ADMIN_LISTEN", "127.0.0.1:0")
            .env("TIKTOK_AUTH0_PROXY_LOG__FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the proxy binary starts");

        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (addr_tx, mut addr_rx) = tokio::sync::mpsc::unbounded_channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            let addr_tx = addr_tx.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if let Ok(event) = serde_json::from_str::<Value>(&line) {
                        for (field, which) in [("public_addr", "public"), ("admin_addr", "admin")] {
                            if let Some(addr) = event[field].as_str() {
                                let _ = addr_tx.send((which, addr.parse::<SocketAddr>().unwrap()));
                            }
                        }
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }

        let (mut public, mut admin) = (None, None);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while public.is_none() || admin.is_none() {
            match tokio::time::timeout_at(deadline, addr_rx.recv()).await {
                Ok(Some(("public", addr))) => public = Some(addr),
                Ok(Some((_, addr))) => admin = Some(addr),
                _ => panic!(
                    "the proxy did not log its listeners: {:?}",
                    lines.lock().unwrap()
                ),
            }
        }
        Self {
            child,
            public: public.unwrap(),
            admin: admin.unwrap(),
            lines,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn stop(&mut self) {
        self.terminate();
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("the proxy exits after SIGTERM")
            .unwrap();
        assert!(status.success(), "{status:?}\n{}", self.log());
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// A settings file serving apps A and B against `sandbox`, plus extra YAML lines.
pub fn config_file(sandbox: &TestSandbox, extra: &str) -> std::path::PathBuf {
    let yaml = format!(
        "tiktok:\n  token_url: {token}\n  timeout: 1s\n{extra}\
         credentials:\n  apps:\n\
         \x20   - {{client_key: {APP_A_KEY}, client_secret: {APP_A_SECRET}}}\n\
         \x20   - {{client_key: {APP_B_KEY}, client_secret: {APP_B_SECRET}, \
         auth0_client_secret: {APP_B_AUTH0_SECRET}}}\n",
        token = sandbox.url("/v2/oauth/token/"),
    );
    let path = std::env::temp_dir().join(format!(
        "tiktok-auth0-proxy-test-{}-{}.yaml",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::write(&path, yaml).unwrap();
    path
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
