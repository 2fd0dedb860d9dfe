//! Credentials from Kubernetes Secrets over loopback: real kube-rs watchers against the API
//! server stand-in, feeding the real router, which talks to the TikTok sandbox.
//!
//! Each test runs on one thread, so the log capture sees every line its watchers write.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::kube_api::KubeApi;
use support::*;
use tiktok_auth0_proxy::apps::Registry;
use tiktok_auth0_proxy::apps::kubernetes;
use tiktok_auth0_proxy::settings::CredentialSource;
use tokio::task::JoinHandle;

const NAMESPACE: &str = "identity";
const SECRET_A: &str = "tiktok-app-alpha";
const SECRET_B: &str = "tiktok-app-bravo";
const WATCHER_TARGET: &str = "tiktok_auth0_proxy::apps::kubernetes";

fn entry(secret: &str) -> String {
    kubernetes::entry_name(secret)
}

fn app_a(client_secret: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("client_key", APP_A_KEY.into()),
        ("client_secret", client_secret.as_bytes().to_vec()),
    ]
}

fn app_b() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("client_key", APP_B_KEY.into()),
        ("client_secret", APP_B_SECRET.into()),
        ("auth0_client_secret", APP_B_AUTH0_SECRET.into()),
    ]
}

fn put(api: &KubeApi, name: &str, data: &[(&'static str, Vec<u8>)]) -> u64 {
    let data: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    api.put_secret(NAMESPACE, name, &data)
}

/// Log lines written while the capture is alive, as JSON objects.
struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = LogWriter(buffer.clone());
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter("info,tiktok_auth0_proxy=debug")
            .with_writer(move || writer.clone())
            .finish();
        Self {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }

    /// The watchers' lines about `secret` at `level`.
    fn watcher_lines(&self, level: &str, secret: &str) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| {
                line["target"].as_str() == Some(WATCHER_TARGET)
                    && line["level"] == level
                    && line["fields"]["secret"] == secret
            })
            .collect()
    }

    fn has(&self, level: &str, secret: &str, message: &str) -> bool {
        self.watcher_lines(level, secret)
            .iter()
            .any(|line| line["fields"]["message"] == message)
    }
}

/// The stand-in, the sandbox and the proxy, with one watcher per Secret feeding the proxy.
struct Cluster {
    api: KubeApi,
    sandbox: TestSandbox,
    proxy: TestProxy,
    secrets: Vec<String>,
    watchers: Vec<JoinHandle<()>>,
    logs: Logs,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for watcher in &self.watchers {
            watcher.abort();
        }
    }
}

impl Cluster {
    /// Starts the proxy watching `secrets` in [`NAMESPACE`] on `api`, without waiting for it.
    async fn start(api: KubeApi, secrets: &[&str]) -> Self {
        let logs = Logs::capture();
        let sandbox = TestSandbox::start().await;
        let mut settings = settings_for(&sandbox);
        settings.credentials.source = CredentialSource::Kubernetes;
        settings.credentials.apps.clear();
        let kube_settings = &mut settings.credentials.kubernetes;
        kube_settings.secrets = secrets.iter().map(|name| (*name).to_owned()).collect();
        kube_settings.namespace = Some(NAMESPACE.to_owned());
        let kube_settings = kube_settings.clone();

        // The client's own default namespace differs, so the setting must be what counts.
        let client = api.client("default");
        let namespace = kubernetes::namespace(&kube_settings, &client);
        assert_eq!(namespace, NAMESPACE);

        let registry = Arc::new(Registry::new(
            kube_settings.secrets.iter().map(|name| entry(name)),
        ));
        let proxy = TestProxy::start_with_registry(settings, registry.clone()).await;
        let watchers = kubernetes::spawn_watchers(
            client,
            &namespace,
            &kube_settings,
            registry,
            proxy.metrics.clone(),
        );
        Self {
            api,
            sandbox,
            proxy,
            secrets: kube_settings.secrets,
            watchers,
            logs,
        }
    }

    /// Starts as [`Cluster::start`] and waits until the proxy is ready.
    async fn start_ready(api: KubeApi, secrets: &[&str]) -> Self {
        let cluster = Self::start(api, secrets).await;
        cluster.wait_ready().await;
        cluster
    }

    async fn wait_ready(&self) {
        eventually("the proxy to be ready", || async {
            self.readyz().await.0 == 200
        })
        .await;
    }

    async fn readyz(&self) -> (u16, Value) {
        let response = http()
            .get(self.proxy.admin_url("/readyz"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// The `/readyz` problems as (source, problem) pairs.
    async fn problems(&self) -> Vec<(String, String)> {
        let (_, report) = self.readyz().await;
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|problem| {
                let field = |name: &str| problem[name].as_str().unwrap().to_owned();
                (field("source"), field("problem"))
            })
            .collect()
    }

    /// A code exchange for `client_key`, presenting `auth0_secret`.
    async fn exchange(&self, client_key: &str, auth0_secret: &str) -> Answer {
        let code = self.sandbox.code(client_key);
        let form = code_form(client_key, auth0_secret, &code);
        post_form(&self.proxy.url("/token"), &form).await
    }

    async fn exchange_succeeds(&self, client_key: &str, auth0_secret: &str) -> bool {
        self.exchange(client_key, auth0_secret).await.status == 200
    }

    /// The value of metric `name` for credential source `source`, as `/metrics` serves it.
    async fn metric(&self, name: &str, source: &str) -> u64 {
        let text = http()
            .get(self.proxy.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let prefix = format!("tiktok_auth0_proxy_{name}{{source=\"{source}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0, |value| value.trim().parse().unwrap())
    }

    /// Asserts that every request the stand-in saw was a list or watch of one named Secret,
    /// selected by `metadata.name`, and that each Secret was both listed and watched.
    fn assert_every_request_selects_one_secret_by_name(&self) {
        let requests = self.api.requests();
        let collection = format!("/api/v1/namespaces/{NAMESPACE}/secrets");
        for request in &requests {
            assert_eq!(request.method, "GET", "{request:?}");
            assert_eq!(request.path, collection, "{request:?}");
            let selected = request
                .param("fieldSelector")
                .and_then(|selector| selector.strip_prefix("metadata.name="));
            assert!(
                selected.is_some_and(|name| self.secrets.iter().any(|secret| secret == name)),
                "a request without a name selector: {request:?}"
            );
        }
        for secret in &self.secrets {
            let selector = format!("metadata.name={secret}");
            let of_secret: Vec<_> = requests
                .iter()
                .filter(|request| request.param("fieldSelector") == Some(selector.as_str()))
                .collect();
            assert!(
                of_secret.iter().any(|request| !request.is_watch()),
                "{secret} listed"
            );
            assert!(
                of_secret.iter().any(|request| request.is_watch()),
                "{secret} watched"
            );
        }
    }

    fn lists_of(&self, secret: &str) -> usize {
        let selector = format!("metadata.name={secret}");
        self.api
            .requests()
            .iter()
            .filter(|request| {
                !request.is_watch() && request.param("fieldSelector") == Some(selector.as_str())
            })
            .count()
    }

    fn watches_of(&self, secret: &str) -> usize {
        let selector = format!("metadata.name={secret}");
        self.api
            .requests()
            .iter()
            .filter(|request| {
                request.is_watch() && request.param("fieldSelector") == Some(selector.as_str())
            })
            .count()
    }
}

/// Whether the proxy itself refuses app A's original secret, which proves that a change of
/// its TikTok secret has arrived (Auth0 presents the TikTok secret for app A).
/// Writes a new client secret into app A's Secret and waits until the proxy refuses the old one.
async fn rotate_a(cluster: &Cluster, new_secret: &str, what: &str) {
    put(&cluster.api, SECRET_A, &app_a(new_secret));
    eventually(what, || async { refuses_old_secret(cluster).await }).await;
}

async fn refuses_old_secret(cluster: &Cluster) -> bool {
    let answer = cluster.exchange(APP_A_KEY, APP_A_SECRET).await;
    answer.status == 401 && answer.body["error_description"] == "client authentication failed"
}

#[tokio::test]
async fn two_secrets_serve_two_apps() {
    let api = KubeApi::start().await;
    put(&api, SECRET_A, &app_a(APP_A_SECRET));
    put(&api, SECRET_B, &app_b());
    // The same names in another namespace hold nothing usable: only the configured one counts.
    api.put_secret("default", SECRET_A, &[("client_key", b"decoy")]);
    let cluster = Cluster::start(api, &[SECRET_A, SECRET_B]).await;

    cluster.wait_ready().await;

    let (_, report) = cluster.readyz().await;
    assert_eq!(report["apps_loaded"], 2, "{report}");
    assert_eq!(report["not_synced"], serde_json::json!([]), "{report}");
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");

    let a = cluster.exchange(APP_A_KEY, APP_A_SECRET).await;
    assert_eq!(a.status, 200, "{a:?}");
    let b = cluster.exchange(APP_B_KEY, APP_B_AUTH0_SECRET).await;
    assert_eq!(b.status, 200, "{b:?}");
    // App B's TikTok secret is not what Auth0 presents.
    cluster
        .exchange(APP_B_KEY, APP_B_SECRET)
        .await
        .assert_error(401, "invalid_client");

    for secret in [SECRET_A, SECRET_B] {
        assert_eq!(
            cluster
                .metric("credential_reloads_total", &entry(secret))
                .await,
            1
        );
        assert_eq!(
            cluster
                .metric("credential_source_usable", &entry(secret))
                .await,
            1
        );
        assert_eq!(
            cluster.metric("watch_errors_total", &entry(secret)).await,
            0
        );
        assert!(cluster.logs.has("INFO", secret, "app loaded"));
    }
    let log = cluster.logs.text();
    for value in [APP_A_SECRET, APP_B_SECRET, APP_B_AUTH0_SECRET] {
        assert!(!log.contains(value), "a secret value was logged");
    }
    cluster.assert_every_request_selects_one_secret_by_name();
}

#[tokio::test]
async fn a_rotated_client_secret_is_in_force_for_the_next_request() {
    // TikTok has rotated app A's secret; the Secret still holds the old one.
    let old_secret = "secret-app-a-TIKTOK-revoked";
    let api = KubeApi::start().await;
    put(&api, SECRET_A, &app_a(old_secret));
    let cluster = Cluster::start_ready(api, &[SECRET_A]).await;
    cluster
        .exchange(APP_A_KEY, old_secret)
        .await
        .assert_error(401, "invalid_client");

    let code = cluster.sandbox.code(APP_A_KEY);
    let form = code_form(APP_A_KEY, APP_A_SECRET, &code);
    // One client for every attempt, so that the measurement is not of building clients.
    let client = http();
    let mut attempts = 0;
    let written = Instant::now();
    put(&cluster.api, SECRET_A, &app_a(APP_A_SECRET));
    let accepted = loop {
        attempts += 1;
        let response = client.post(cluster.proxy.url("/token")).form(&form).send();
        let answer = Answer::read(response.await.unwrap()).await;
        if answer.status == 200 {
            break written.elapsed();
        }
        // Until the change lands, the proxy itself refuses the new secret.
        answer.assert_error(401, "invalid_client");
        assert!(
            written.elapsed() < DEADLINE,
            "the rotation never took effect"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    println!(
        "rotation: {:.1} ms from the API write until the proxy accepted the new secret \
         ({attempts} attempts)",
        accepted.as_secs_f64() * 1000.0
    );

    let requests_to_tiktok = cluster.sandbox.sandbox.token_requests().len();
    cluster
        .exchange(APP_A_KEY, old_secret)
        .await
        .assert_error(401, "invalid_client");
    assert_eq!(
        cluster.sandbox.sandbox.token_requests().len(),
        requests_to_tiktok,
        "the old secret is refused by the proxy, without asking TikTok"
    );
    assert_eq!(
        cluster
            .metric("credential_reloads_total", &entry(SECRET_A))
            .await,
        2
    );
    assert!(
        cluster
            .logs
            .has("INFO", SECRET_A, "app credentials changed")
    );
    assert_eq!(cluster.readyz().await.0, 200);
    cluster.assert_every_request_selects_one_secret_by_name();
}

#[tokio::test]
async fn a_deleted_secret_removes_its_app_and_a_recreated_one_restores_it() {
    let api = KubeApi::start().await;
    put(&api, SECRET_A, &app_a(APP_A_SECRET));
    put(&api, SECRET_B, &app_b());
    let cluster = Cluster::start_ready(api, &[SECRET_A, SECRET_B]).await;

    assert!(cluster.api.delete_secret(NAMESPACE, SECRET_A));
    eventually("app A to be removed", || async {
        cluster.exchange(APP_A_KEY, APP_A_SECRET).await.status == 401
    })
    .await;
    cluster
        .exchange(APP_A_KEY, APP_A_SECRET)
        .await
        .assert_error(401, "invalid_client");
    assert!(
        cluster
            .exchange_succeeds(APP_B_KEY, APP_B_AUTH0_SECRET)
            .await
    );
    let (status, report) = cluster.readyz().await;
    assert_eq!(status, 200, "app B still serves: {report}");
    assert_eq!(
        cluster.problems().await,
        [(entry(SECRET_A), "not found".to_owned())]
    );
    assert!(
        cluster
            .logs
            .has("INFO", SECRET_A, "secret deleted: app removed")
    );

    // With every Secret gone no app is loaded, so the proxy is not ready.
    assert!(cluster.api.delete_secret(NAMESPACE, SECRET_B));
    eventually("readiness to turn off", || async {
        cluster.readyz().await.0 == 503
    })
    .await;
    cluster
        .exchange(APP_B_KEY, APP_B_AUTH0_SECRET)
        .await
        .assert_error(503, "temporarily_unavailable");

    put(&cluster.api, SECRET_A, &app_a(APP_A_SECRET));
    put(&cluster.api, SECRET_B, &app_b());
    eventually("both apps to come back", || async {
        cluster.exchange_succeeds(APP_A_KEY, APP_A_SECRET).await
            && cluster
                .exchange_succeeds(APP_B_KEY, APP_B_AUTH0_SECRET)
                .await
    })
    .await;
    assert_eq!(cluster.readyz().await.0, 200);
    assert!(cluster.problems().await.is_empty());
    assert_eq!(
        cluster
            .metric("credential_reloads_total", &entry(SECRET_A))
            .await,
        3
    );
    cluster.assert_every_request_selects_one_secret_by_name();
}

#[tokio::test]
async fn a_secret_absent_at_start_is_reported_and_loaded_once_created() {
    let api = KubeApi::start().await;
    put(&api, SECRET_B, &app_b());
    let cluster = Cluster::start_ready(api, &[SECRET_A, SECRET_B]).await;

    // Looked for and not found counts as synced: app B alone makes the proxy ready.
    let (_, report) = cluster.readyz().await;
    assert_eq!(report["apps_loaded"], 1, "{report}");
    assert_eq!(
        cluster.problems().await,
        [(entry(SECRET_A), "not found".to_owned())]
    );
    assert!(cluster.logs.has(
        "WARN",
        SECRET_A,
        "secret not found: its app is unavailable until the secret is created"
    ));

    put(&cluster.api, SECRET_A, &app_a(APP_A_SECRET));
    eventually("app A to load", || async {
        cluster.exchange_succeeds(APP_A_KEY, APP_A_SECRET).await
    })
    .await;
    assert!(cluster.problems().await.is_empty());
    cluster.assert_every_request_selects_one_secret_by_name();
}

#[tokio::test]
async fn a_secret_missing_a_key_is_reported_by_name_and_key_without_values() {
    let api = KubeApi::start().await;
    put(&api, SECRET_A, &[("client_key", APP_A_KEY.into())]);
    put(&api, SECRET_B, &app_b());
    let cluster = Cluster::start_ready(api, &[SECRET_A, SECRET_B]).await;

    let (_, report) = cluster.readyz().await;
    assert_eq!(report["apps_loaded"], 1, "{report}");
    assert_eq!(
        cluster.problems().await,
        [(entry(SECRET_A), "missing key `client_secret`".to_owned())]
    );
    assert!(!report.to_string().contains(APP_A_KEY), "{report}");
    cluster
        .exchange(APP_A_KEY, APP_A_SECRET)
        .await
        .assert_error(401, "invalid_client");
    assert_eq!(
        cluster
            .metric("credential_source_usable", &entry(SECRET_A))
            .await,
        0
    );
    assert_eq!(
        cluster
            .metric("credential_source_usable", &entry(SECRET_B))
            .await,
        1
    );

    let warnings = cluster.logs.watcher_lines("WARN", SECRET_A);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["fields"]["keys"], "client_secret");
    assert!(
        !warnings[0].to_string().contains(APP_A_KEY),
        "{}",
        warnings[0]
    );

    // Fixed, the app loads; emptied again, it is unusable again.
    put(&cluster.api, SECRET_A, &app_a(APP_A_SECRET));
    eventually("app A to load", || async {
        cluster.exchange_succeeds(APP_A_KEY, APP_A_SECRET).await
    })
    .await;
    assert!(cluster.problems().await.is_empty());

    put(&cluster.api, SECRET_A, &app_a(""));
    eventually("the empty value to be reported", || async {
        cluster.problems().await == [(entry(SECRET_A), "key `client_secret` is empty".to_owned())]
    })
    .await;
    cluster
        .exchange(APP_A_KEY, APP_A_SECRET)
        .await
        .assert_error(401, "invalid_client");
    assert_eq!(cluster.readyz().await.0, 200);
    assert!(!cluster.logs.text().contains(APP_A_SECRET));
    cluster.assert_every_request_selects_one_secret_by_name();
}

#[tokio::test]
async fn a_value_that_is_not_utf8_makes_the_app_unusable() {
    let api = KubeApi::start().await;
    let mut data = app_a(APP_A_SECRET);
    data[1].1 = b"\xff\xfe-not-text".to_vec();
    put(&api, SECRET_A, &data);
    let cluster = Cluster::start(api, &[SECRET_A]).await;

    eventually("the secret to be read", || async {
        cluster.readyz().await.1["not_synced"] == serde_json::json!([])
    })
    .await;
    let (status, report) = cluster.readyz().await;
    assert_eq!(status, 503, "its only app is unusable: {report}");
    assert_eq!(
        cluster.problems().await,
        [(
            entry(SECRET_A),
            "key `client_secret` is not UTF-8".to_owned()
        )]
    );
    assert!(!report.to_string().contains("not-text"), "{report}");
    let warnings = cluster.logs.watcher_lines("WARN", SECRET_A);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(!cluster.logs.text().contains("not-text"));
    cluster.assert_every_request_selects_one_secret_by_name();
}

#[tokio::test]
async fn unreachable_api_at_start_means_live_but_not_ready_until_it_answers() {
    let api = KubeApi::start().await;
    put(&api, SECRET_A, &app_a(APP_A_SECRET));
    put(&api, SECRET_B, &app_b());
    api.down();
    let cluster = Cluster::start(api, &[SECRET_A, SECRET_B]).await;

    eventually("two failed attempts per secret", || async {
        cluster.metric("watch_errors_total", &entry(SECRET_A)).await >= 2
            && cluster.metric("watch_errors_total", &entry(SECRET_B)).await >= 2
    })
    .await;
    let live = http()
        .get(cluster.proxy.admin_url("/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let (status, report) = cluster.readyz().await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(
        report["not_synced"],
        serde_json::json!([entry(SECRET_A), entry(SECRET_B)])
    );
    cluster
        .exchange(APP_A_KEY, APP_A_SECRET)
        .await
        .assert_error(503, "temporarily_unavailable");

    cluster.api.up();
    cluster.wait_ready().await;
    assert!(cluster.exchange_succeeds(APP_A_KEY, APP_A_SECRET).await);
    assert!(
        cluster
            .exchange_succeeds(APP_B_KEY, APP_B_AUTH0_SECRET)
            .await
    );
    for secret in [SECRET_A, SECRET_B] {
        // Logged once per episode, not once per retry.
        assert_eq!(
            cluster.logs.watcher_lines("WARN", secret).len(),
            1,
            "{secret}"
        );
        eventually("the recovery to be logged", || async {
            cluster.logs.has("INFO", secret, "watch recovered")
        })
        .await;
    }
    cluster.assert_every_request_selects_one_secret_by_name();
}

#[tokio::test]
async fn a_dropped_watch_resumes_and_later_changes_arrive() {
    let api = KubeApi::start().await;
    put(&api, SECRET_A, &app_a(APP_A_SECRET));
    put(&api, SECRET_B, &app_b());
    let cluster = Cluster::start_ready(api, &[SECRET_A, SECRET_B]).await;
    eventually("both watches to open", || async {
        cluster.api.open_watches() == 2
    })
    .await;
    let watches_before = cluster.watches_of(SECRET_A);

    cluster.api.drop_watches();
    eventually("the watch to be resumed", || async {
        cluster.watches_of(SECRET_A) > watches_before
    })
    .await;
    assert_eq!(cluster.readyz().await.0, 200);

    rotate_a(
        &cluster,
        "secret-app-a-TIKTOK-after-the-drop",
        "the change after the drop to arrive",
    )
    .await;
    // A cut stream is resumed from its version: no error, no relist.
    assert_eq!(cluster.lists_of(SECRET_A), 1);
    assert_eq!(
        cluster.metric("watch_errors_total", &entry(SECRET_A)).await,
        0
    );
    cluster.assert_every_request_selects_one_secret_by_name();
}

#[tokio::test]
async fn an_expired_resource_version_forces_a_relist() {
    let api = KubeApi::start().await;
    put(&api, SECRET_A, &app_a(APP_A_SECRET));
    let cluster = Cluster::start_ready(api, &[SECRET_A]).await;
    eventually("the watch to open", || async {
        cluster.api.open_watches() == 1
    })
    .await;
    assert_eq!(cluster.lists_of(SECRET_A), 1);

    cluster.api.expire_watches();
    eventually("a relist after the 410", || async {
        let requests = cluster.api.requests();
        let expired = requests.iter().position(|request| request.expired);
        expired.is_some_and(|at| requests[at..].iter().any(|request| !request.is_watch()))
    })
    .await;
    assert_eq!(cluster.readyz().await.0, 200);

    rotate_a(
        &cluster,
        "secret-app-a-TIKTOK-after-relist",
        "the change after the relist to arrive",
    )
    .await;
    assert_eq!(
        cluster.metric("watch_errors_total", &entry(SECRET_A)).await,
        1
    );
    // An expired version is routine: nothing for an operator to act on.
    assert!(cluster.logs.watcher_lines("WARN", SECRET_A).is_empty());
    cluster.assert_every_request_selects_one_secret_by_name();
}

/// An episode of `status` answers: the last known app keeps serving, the episode is logged
/// once, and the watcher comes back by itself.
async fn an_error_episode_keeps_the_last_known_app(status: u16) -> Cluster {
    let api = KubeApi::start().await;
    put(&api, SECRET_A, &app_a(APP_A_SECRET));
    let cluster = Cluster::start_ready(api, &[SECRET_A]).await;
    eventually("the watch to open", || async {
        cluster.api.open_watches() == 1
    })
    .await;

    cluster.api.fail_next(status, 3);
    cluster.api.drop_watches();
    eventually("the first error", || async {
        cluster.metric("watch_errors_total", &entry(SECRET_A)).await >= 1
    })
    .await;
    assert_eq!(
        cluster.readyz().await.0,
        200,
        "ready with the last known app"
    );
    assert!(cluster.exchange_succeeds(APP_A_KEY, APP_A_SECRET).await);

    eventually("the recovery", || async {
        cluster.logs.has("INFO", SECRET_A, "watch recovered")
    })
    .await;
    assert_eq!(
        cluster.metric("watch_errors_total", &entry(SECRET_A)).await,
        3
    );
    let warnings = cluster.logs.watcher_lines("WARN", SECRET_A);
    assert_eq!(warnings.len(), 1, "once per episode: {warnings:?}");
    let refused = cluster
        .api
        .requests()
        .iter()
        .filter(|r| r.status == status)
        .count();
    assert_eq!(refused, 3);

    rotate_a(
        &cluster,
        "secret-app-a-TIKTOK-after-episode",
        "a change after the episode to arrive",
    )
    .await;
    cluster.assert_every_request_selects_one_secret_by_name();
    cluster
}

#[tokio::test]
async fn a_403_episode_keeps_the_last_known_app_and_points_at_the_role() {
    let cluster = an_error_episode_keeps_the_last_known_app(403).await;
    let warning = &cluster.logs.watcher_lines("WARN", SECRET_A)[0];
    let message = warning["fields"]["message"].as_str().unwrap();
    assert!(message.contains("Role"), "{warning}");
    assert!(message.contains("resourceNames"), "{warning}");
}

#[tokio::test]
async fn a_server_error_episode_keeps_the_last_known_app() {
    let cluster = an_error_episode_keeps_the_last_known_app(500).await;
    let warning = &cluster.logs.watcher_lines("WARN", SECRET_A)[0];
    assert!(
        !warning["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("Role")
    );
}

#[tokio::test]
async fn every_watcher_request_selects_its_secret_by_name() {
    let api = KubeApi::start().await;
    put(&api, SECRET_A, &app_a(APP_A_SECRET));
    put(&api, SECRET_B, &app_b());
    // Another Secret in the namespace, which the proxy has no business reading.
    api.put_secret(NAMESPACE, "database-password", &[("password", b"hunter2")]);
    let cluster = Cluster::start_ready(api, &[SECRET_A, SECRET_B]).await;

    // Reconnects of every kind, each of which sends new requests.
    eventually("both watches to open", || async {
        cluster.api.open_watches() == 2
    })
    .await;
    cluster.api.drop_watches();
    eventually("both watches to reopen", || async {
        cluster.api.open_watches() == 2
    })
    .await;
    cluster.api.expire_watches();
    eventually("both secrets to be relisted", || async {
        cluster.lists_of(SECRET_A) >= 2 && cluster.lists_of(SECRET_B) >= 2
    })
    .await;

    let requests = cluster.api.requests();
    assert!(requests.len() >= 8, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|request| request.status == 200 || request.expired)
    );
    cluster.assert_every_request_selects_one_secret_by_name();
    let (_, report) = cluster.readyz().await;
    assert!(
        !report.to_string().contains("database-password"),
        "{report}"
    );
}

/// The real binary, configured for Kubernetes, reaching the API server through a kubeconfig
/// (as when run from a laptop) and taking the namespace from its context.
#[tokio::test]
async fn the_binary_serves_apps_from_secrets_found_through_a_kubeconfig() {
    let api = KubeApi::start().await;
    put(&api, SECRET_A, &app_a(APP_A_SECRET));
    let sandbox = TestSandbox::start().await;
    let kubeconfig = std::env::temp_dir().join(format!(
        "tiktok-auth0-proxy-kubeconfig-{}-{}.yaml",
        std::process::id(),
        api.url().rsplit(':').next().unwrap()
    ));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: stand-in, cluster: {{server: '{}'}}}}]\n\
             users: [{{name: tester, user: {{}}}}]\n\
             contexts: [{{name: stand-in, context: {{cluster: stand-in, user: tester, \
             namespace: {NAMESPACE}}}}}]\n\
             current-context: stand-in\n",
            api.url()
        ),
    )
    .unwrap();

    let proxy = ProxyProcess::start(&[
        ("KUBECONFIG", kubeconfig.display().to_string()),
        (
            "TIKTOK_AUTH0_PROXY_CREDENTIALS__SOURCE",
            "kubernetes".to_owned(),
        ),
        (
            "TIKTOK_AUTH0_PROXY_CREDENTIALS__KUBERNETES__SECRETS",
            format!("[{SECRET_A}]"),
        ),
        (
            "TIKTOK_AUTH0_PROXY_TIKTOK__TOKEN_URL",
            sandbox.url("/v2/oauth/token/"),
        ),
    ])
    .await;
    eventually("the binary to be ready", || async {
        let response = http().get(proxy.admin_url("/readyz")).send().await;
        response.is_ok_and(|response| response.status() == 200)
    })
    .await;

    let code = sandbox.code(APP_A_KEY);
    let answer = post_form(
        &proxy.url("/token"),
        &code_form(APP_A_KEY, APP_A_SECRET, &code),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}\n{}", proxy.log());
    let watched_namespace = api
        .requests()
        .iter()
        .all(|request| request.path.contains(NAMESPACE));
    assert!(
        watched_namespace,
        "the kubeconfig context's namespace is used"
    );
    assert!(!proxy.log().contains(APP_A_SECRET));
    let _ = std::fs::remove_file(kubeconfig);
}
