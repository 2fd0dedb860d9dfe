//! The Kubernetes credential source: one app per Secret, followed live by kube-rs watchers.
//!
//! Each named Secret gets a watcher of its own whose list and watch requests carry the field
//! selector `metadata.name=<name>`. The API server authorizes such a collection request against
//! a Role's `resourceNames`, so a Role granting `get`, `list` and `watch` on exactly the named
//! Secrets is enough; a watcher over the whole namespace would need to read every Secret in it.
//!
//! A watcher writes what its Secret says into one registry entry (see [`entry_name`]); the
//! registry swaps the whole app snapshot on each change, so the next request sees it. While the
//! API server cannot be reached, entries keep what they last held and the watcher retries with
//! backoff, so the last known apps keep serving.

mod reading;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use tokio::task::JoinHandle;

use crate::apps::Registry;
use crate::metrics::Metrics;
use crate::settings::{KubernetesSettings, SecretKeys};
use reading::{Reading, describe};

/// Where Kubernetes mounts the namespace of a pod's service account.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// How long one watch request lasts before the watcher renews it. kube-rs also treats a watch
/// that stays silent this long plus 5 s as a dead connection, so this bounds how long a
/// silently broken connection (no reset ever arrives) can hide a rotation. Renewing a watch on
/// one object once a minute costs the API server next to nothing.
const WATCH_TIMEOUT_SECS: u32 = 60;

/// A Kubernetes client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// Neither an in-cluster service account nor a kubeconfig could be loaded.
    #[error("cannot find a kubernetes configuration: {0}")]
    Config(#[from] kube::config::InferConfigError),
    /// The configuration was found but no client could be built from it.
    #[error("cannot build a kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A client for the cluster the proxy runs in, from the pod's service account; outside a
/// cluster, from the kubeconfig (`KUBECONFIG`, else `~/.kube/config`) and its current context.
pub async fn client() -> Result<kube::Client, KubernetesError> {
    crate::install_crypto_provider();
    let config = match kube::Config::incluster() {
        Ok(config) => config,
        // `infer` tries the kubeconfig and then the service account once more, and its error
        // reports why each failed, which is what a person running this on a laptop needs.
        Err(_) => kube::Config::infer().await?,
    };
    kube::Client::try_from(config).map_err(KubernetesError::Client)
}

/// The namespace of the Secrets: the `namespace` setting, else `POD_NAMESPACE`, else the
/// service account's namespace file, else the client's default (the kubeconfig context's).
pub fn namespace(settings: &KubernetesSettings, client: &kube::Client) -> String {
    let from_env = std::env::var("POD_NAMESPACE").ok();
    let from_file = std::fs::read_to_string(Path::new(SERVICE_ACCOUNT_NAMESPACE)).ok();
    first_namespace(
        [
            settings.namespace.as_deref(),
            from_env.as_deref(),
            from_file.as_deref(),
        ],
        client.default_namespace(),
    )
}

fn first_namespace<'a>(candidates: impl IntoIterator<Item = Option<&'a str>>, or: &str) -> String {
    candidates
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|namespace| !namespace.is_empty())
        .unwrap_or(or)
        .to_owned()
}

/// The registry entry (and the `/readyz` and metric name) of the Secret called `secret`:
/// `secret/<name>`.
pub fn entry_name(secret: &str) -> String {
    format!("secret/{secret}")
}

/// Starts one watcher per Secret named in `settings`, each running until its task is aborted.
///
/// The caller creates `registry` with `Registry::new(secrets.iter().map(|s| entry_name(s)))`,
/// so that every entry starts pending and the proxy is not ready before each Secret has been
/// read once (or found missing). `metrics` counts applied changes and watch errors per entry.
pub fn spawn_watchers(
    client: kube::Client,
    namespace: &str,
    settings: &KubernetesSettings,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
) -> Vec<JoinHandle<()>> {
    settings
        .secrets
        .iter()
        .map(|name| {
            let watch = SecretWatch {
                api: Api::namespaced(client.clone(), namespace),
                namespace: namespace.to_owned(),
                name: name.clone(),
                entry: entry_name(name),
                keys: settings.keys.clone(),
                registry: registry.clone(),
                metrics: metrics.clone(),
            };
            tracing::info!(secret = %name, %namespace, "watching secret");
            tokio::spawn(watch.run())
        })
        .collect()
}

/// Follows one Secret and keeps its registry entry current.
struct SecretWatch {
    api: Api<KubeSecret>,
    namespace: String,
    name: String,
    entry: String,
    keys: SecretKeys,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
}

/// What a watcher remembers across restarts.
#[derive(Default)]
struct WatchState {
    /// The reading in the registry now; `None` while the entry is still pending.
    applied: Option<Reading>,
    /// Whether an error episode is under way, so that it is logged once, not once per retry.
    failing: bool,
    delays: RetryDelays,
}

impl SecretWatch {
    async fn run(self) {
        let mut state = WatchState::default();
        loop {
            let config = watcher::Config::default()
                .fields(&format!("metadata.name={}", self.name))
                .timeout(WATCH_TIMEOUT_SECS);
            let mut events = watcher::watcher(self.api.clone(), config).boxed();
            // The Secret as listed since the last `Init`, applied only at `InitDone`: a list
            // that fails halfway must not replace what the registry holds.
            let mut listed = None;

            while let Some(event) = events.next().await {
                match event {
                    // NB: `Init` comes before the list request is even sent, so it proves
                    // nothing about the API server being reachable.
                    Ok(Event::Init) => listed = None,
                    Ok(Event::InitApply(secret)) => {
                        self.recovered(&mut state);
                        if self.is_ours(&secret) {
                            listed = Some(Reading::from_secret(&secret, &self.keys));
                        }
                    }
                    Ok(Event::InitDone) => {
                        self.recovered(&mut state);
                        // A list without the Secret means it does not exist (any more).
                        self.apply(listed.take().unwrap_or(Reading::Absent), &mut state);
                    }
                    Ok(Event::Apply(secret)) => {
                        self.recovered(&mut state);
                        if self.is_ours(&secret) {
                            self.apply(Reading::from_secret(&secret, &self.keys), &mut state);
                        }
                    }
                    Ok(Event::Delete(secret)) => {
                        self.recovered(&mut state);
                        if self.is_ours(&secret) {
                            self.apply(Reading::Absent, &mut state);
                        }
                    }
                    Err(error) => {
                        self.failed(&error, &mut state);
                        break;
                    }
                }
            }

            // NB: starting over means a fresh list rather than resuming the watch. The list's
            // answer is the first sign that the API server is back, which is what lets the
            // episode end with a log line, and it picks up a change or a deletion made while
            // the watcher was away. The delay applies after an expired version too, so that a
            // server answering 410 to every watch cannot make the watcher spin.
            tokio::time::sleep(state.delays.next()).await;
        }
    }

    /// Whether `secret` is the one this watcher follows.
    fn is_ours(&self, secret: &KubeSecret) -> bool {
        // NB: the field selector already keeps other Secrets out; this guards against a server
        // or proxy that ignores it, which must not let another Secret stand in for ours.
        let ours = secret.metadata.name.as_deref() == Some(self.name.as_str());
        if !ours {
            tracing::debug!(secret = %self.name, "ignoring an event for another secret");
        }
        ours
    }

    /// Puts `reading` into the registry, unless it says what the registry holds already.
    fn apply(&self, reading: Reading, state: &mut WatchState) {
        if state.applied.as_ref() == Some(&reading) {
            return;
        }
        self.log_change(state.applied.as_ref(), &reading);
        self.registry.set(&self.entry, reading.to_entry());
        self.metrics.credential_reloaded(&self.entry);
        state.applied = Some(reading);
    }

    fn log_change(&self, before: Option<&Reading>, after: &Reading) {
        let secret = &self.name;
        match (before, after) {
            (Some(Reading::Loaded(old)), Reading::Loaded(new))
                if old.client_key == new.client_key =>
            {
                tracing::info!(%secret, client_key = %new.client_key, "app credentials changed");
            }
            (Some(Reading::Loaded(old)), Reading::Loaded(new)) => tracing::info!(
                %secret,
                client_key = %new.client_key,
                previous_client_key = %old.client_key,
                "app replaced"
            ),
            (_, Reading::Loaded(new)) => {
                tracing::info!(%secret, client_key = %new.client_key, "app loaded");
            }
            (_, Reading::Unusable(problems)) => {
                let keys: Vec<&str> = problems
                    .iter()
                    .map(|problem| problem.key.as_str())
                    .collect();
                tracing::warn!(
                    %secret,
                    keys = %keys.join(","),
                    problem = %describe(problems),
                    "secret unusable: its app is unavailable until the secret is fixed"
                );
            }
            (Some(Reading::Loaded(old)), Reading::Absent) => tracing::info!(
                %secret,
                client_key = %old.client_key,
                "secret deleted: app removed"
            ),
            (_, Reading::Absent) => tracing::warn!(
                %secret,
                namespace = %self.namespace,
                "secret not found: its app is unavailable until the secret is created"
            ),
        }
    }

    fn failed(&self, error: &watcher::Error, state: &mut WatchState) {
        self.metrics.watch_error(&self.entry);
        if status_code(error) == Some(410) {
            // The version the watch resumed from is older than the API server's history.
            // That is routine after a long disconnect, nothing to act on: the relist that
            // follows brings back whatever was missed.
            tracing::debug!(secret = %self.name, "resource version expired; relisting");
            return;
        }
        if state.failing {
            tracing::debug!(secret = %self.name, %error, "watch still failing; retrying");
            return;
        }

        state.failing = true;
        if status_code(error) == Some(403) {
            tracing::warn!(
                secret = %self.name,
                namespace = %self.namespace,
                %error,
                "watch forbidden: the proxy's Role must grant get, list and watch on this secret \
                 (resourceNames); keeping the last known app and retrying"
            );
        } else {
            tracing::warn!(
                secret = %self.name,
                %error,
                "watch failed: keeping the last known app and retrying with backoff"
            );
        }
    }

    fn recovered(&self, state: &mut WatchState) {
        state.delays.reset();
        if state.failing {
            state.failing = false;
            tracing::info!(secret = %self.name, "watch recovered");
        }
    }
}

/// The HTTP status the API server gave for `error`, if it gave one.
fn status_code(error: &watcher::Error) -> Option<u16> {
    match error {
        watcher::Error::InitialListFailed(error)
        | watcher::Error::WatchStartFailed(error)
        | watcher::Error::WatchFailed(error) => match error {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        },
        watcher::Error::WatchError(status) => Some(status.code),
        watcher::Error::NoResourceVersion => None,
    }
}

/// Delays between attempts after errors: exponential from half a second to 30 s, like
/// client-go's, with jitter so that replicas restarted together do not retry in step.
#[derive(Debug)]
struct RetryDelays {
    next: Duration,
}

impl RetryDelays {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    /// The next delay: between half and all of the current step, which then doubles.
    fn next(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(Self::MAX);
        step.mul_f64(rand::random_range(0.5..=1.0))
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for RetryDelays {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_set_namespace_wins() {
        let pick = |candidates: [Option<&str>; 3]| first_namespace(candidates, "default");
        assert_eq!(pick([Some("set"), Some("env"), Some("file")]), "set");
        assert_eq!(pick([None, Some("env"), Some("file")]), "env");
        assert_eq!(pick([Some(""), Some("  "), Some("file\n")]), "file");
        assert_eq!(pick([None, None, None]), "default");
    }

    #[test]
    fn entries_are_named_after_their_secret() {
        assert_eq!(entry_name("tiktok-app"), "secret/tiktok-app");
    }

    #[test]
    fn retry_delays_grow_to_a_cap_and_reset() {
        let mut delays = RetryDelays::default();
        let first = delays.next();
        assert!(first >= Duration::from_millis(250) && first <= RetryDelays::FIRST);

        let later: Vec<Duration> = (0..10).map(|_| delays.next()).collect();
        assert!(later.iter().all(|delay| *delay <= RetryDelays::MAX));
        assert!(later.last().unwrap() >= &(RetryDelays::MAX / 2));

        delays.reset();
        assert!(delays.next() <= RetryDelays::FIRST);
    }
}
