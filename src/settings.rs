//! Layered settings: built-in defaults < a config file < environment variables.
//!
//! Every key and its variable are listed in the README's configuration table; the defaults are
//! the production values (TikTok's real v2 URLs), so a deployment only sets what differs.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml, Yaml};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::secret::Secret;

/// The prefix of every environment variable that sets a key; nested keys are joined by `__`.
pub const ENV_PREFIX: &str = "TIKTOK_AUTH0_PROXY_";

/// Everything the service can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address of the public, Auth0-facing listener.
    pub listen: SocketAddr,
    /// Address of the admin listener (`/livez`, `/readyz`, `/metrics`).
    pub admin_listen: SocketAddr,
    /// Largest request body the public listener reads, in bytes.
    pub max_request_bytes: usize,
    /// How the process stops.
    pub shutdown: ShutdownSettings,
    /// Logging.
    pub log: LogSettings,
    /// TikTok's side.
    pub tiktok: TikTokSettings,
    /// Where the TikTok apps come from.
    pub credentials: CredentialSettings,
}

/// How the process stops on SIGTERM or SIGINT.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    /// How long `/readyz` answers 503 before the public listener stops accepting, so that load
    /// balancers have time to take the pod out of rotation.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// How long in-flight requests may take to finish after that.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `auto` (JSON unless standard output is a terminal), `json` or `text`.
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter; `RUST_LOG` itself wins when it is set.
    pub filter: String,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when standard output is not a terminal, text when it is.
    Auto,
    /// One JSON object per line.
    Json,
    /// Readable text.
    Text,
}

/// TikTok's endpoints and how the proxy calls them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TikTokSettings {
    /// TikTok's v2 token endpoint (the trailing slash is part of the path).
    pub token_url: Url,
    /// TikTok's v2 authorize page.
    pub authorize_url: Url,
    /// TikTok's v2 user info endpoint.
    pub user_info_url: Url,
    /// Longest wait for a TCP and TLS connection to TikTok.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for a whole call to TikTok, answer included. Auth0 gives up on a Token URL
    /// after some seconds of its own, so this stays well below that.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest answer read from TikTok, in bytes.
    pub max_response_bytes: usize,
}

/// Where the TikTok apps come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSettings {
    /// `static` (the list below, or the `TIKTOK_CLIENT_*` variables) or `kubernetes`.
    pub source: CredentialSource,
    /// The apps of the static source.
    pub apps: Vec<AppSettings>,
    /// The Kubernetes source.
    pub kubernetes: KubernetesSettings,
}

/// The kinds of credential source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialSource {
    /// Apps listed in the settings.
    Static,
    /// Apps read from Kubernetes Secrets and followed live.
    Kubernetes,
}

/// One TikTok app given directly in the settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    /// The app's TikTok client key; Auth0 sends it as `client_id`.
    pub client_key: String,
    /// The app's TikTok client secret.
    pub client_secret: Secret,
    /// What Auth0 must present as `client_secret`; the TikTok secret when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth0_client_secret: Option<Secret>,
}

/// The Kubernetes credential source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSettings {
    /// Namespace of the Secrets; by default `POD_NAMESPACE`, else the service account's.
    pub namespace: Option<String>,
    /// Names of the Secrets, one app each.
    pub secrets: Vec<String>,
    /// The keys inside each Secret.
    pub keys: SecretKeys,
}

/// The keys that hold an app inside a Kubernetes Secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKeys {
    /// Key of the client key.
    pub client_key: String,
    /// Key of the TikTok client secret.
    pub client_secret: String,
    /// Key of Auth0's secret, which is optional in the Secret.
    pub auth0_client_secret: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            max_request_bytes: 16 * 1024,
            shutdown: ShutdownSettings {
                drain_delay: Duration::ZERO,
                grace_period: Duration::from_secs(25),
            },
            log: LogSettings {
                format: LogFormat::Auto,
                // kube-rs logs every retry of a failing watch itself, even at error level; the
                // proxy reports each episode once, with the cause, so kube-rs stays silent.
                filter: "info,kube_runtime=off,kube_client=off".to_owned(),
            },
            tiktok: TikTokSettings {
                token_url: parse_default_url("https://open.tiktokapis.com/v2/oauth/token/"),
                authorize_url: parse_default_url("https://www.tiktok.com/v2/auth/authorize/"),
                user_info_url: parse_default_url("https://open.tiktokapis.com/v2/user/info/"),
                connect_timeout: Duration::from_secs(2),
                timeout: Duration::from_secs(8),
                max_response_bytes: 64 * 1024,
            },
            credentials: CredentialSettings {
                source: CredentialSource::Static,
                apps: Vec::new(),
                kubernetes: KubernetesSettings {
                    namespace: None,
                    secrets: Vec::new(),
                    keys: SecretKeys {
                        client_key: "client_key".to_owned(),
                        client_secret: "client_secret".to_owned(),
                        auth0_client_secret: "auth0_client_secret".to_owned(),
                    },
                },
            },
        }
    }
}

fn parse_default_url(url: &str) -> Url {
    Url::parse(url).expect("built-in URLs are valid")
}

/// A setting that stops start-up; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A value could not be read or has the wrong type.
    #[error("{0}")]
    Invalid(String),
    /// A value was read but makes no sense.
    #[error("setting `{key}` {problem}")]
    Rejected {
        /// The dotted key.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl Settings {
    /// Reads the defaults, then `config_file` (YAML or TOML by extension) when given, then the
    /// environment, and checks the result.
    pub fn load(config_file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::from_figment(Self::figment(config_file))
    }

    /// The layered sources, before extraction.
    pub fn figment(config_file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = config_file {
            let is_toml = path.extension().is_some_and(|ext| ext == "toml");
            figment = if is_toml {
                figment.merge(Toml::file_exact(path))
            } else {
                figment.merge(Yaml::file_exact(path))
            };
        }
        // `TIKTOK_AUTH0_PROXY_CONFIG` names the file itself, so it is no setting.
        figment.merge(Env::prefixed(ENV_PREFIX).ignore(&["CONFIG"]).split("__"))
    }

    /// Extracts and checks settings from `figment`, then adds the app given by the
    /// `TIKTOK_CLIENT_KEY` / `TIKTOK_CLIENT_SECRET` variables, if any.
    pub fn from_figment(figment: Figment) -> Result<Self, SettingsError> {
        let mut settings: Settings = figment.extract().map_err(describe_figment_error)?;
        settings.credentials.apps.extend(app_from_env()?);
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let reject = |key, problem: &str| {
            Err(SettingsError::Rejected {
                key,
                problem: problem.to_owned(),
            })
        };

        if self.max_request_bytes == 0 {
            return reject("max_request_bytes", "must be greater than zero");
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return reject("admin_listen", "must differ from `listen`");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.filter).is_err() {
            return reject(
                "log.filter",
                "is not a valid filter (e.g. `info,hyper=warn`)",
            );
        }

        let tiktok = &self.tiktok;
        for (key, url) in [
            ("tiktok.token_url", &tiktok.token_url),
            ("tiktok.authorize_url", &tiktok.authorize_url),
            ("tiktok.user_info_url", &tiktok.user_info_url),
        ] {
            if !matches!(url.scheme(), "https" | "http") {
                return reject(key, "must be an http or https URL");
            }
        }
        if tiktok.connect_timeout.is_zero() {
            return reject("tiktok.connect_timeout", "must be greater than zero");
        }
        if tiktok.timeout.is_zero() {
            return reject("tiktok.timeout", "must be greater than zero");
        }
        if tiktok.max_response_bytes == 0 {
            return reject("tiktok.max_response_bytes", "must be greater than zero");
        }

        match self.credentials.source {
            CredentialSource::Static => self.validate_static_apps(),
            CredentialSource::Kubernetes => self.validate_kubernetes(),
        }
    }

    fn validate_static_apps(&self) -> Result<(), SettingsError> {
        let apps = &self.credentials.apps;
        if apps.is_empty() {
            return Err(SettingsError::Rejected {
                key: "credentials.apps",
                problem: "is empty: list at least one app, or set TIKTOK_CLIENT_KEY and \
                          TIKTOK_CLIENT_SECRET"
                    .to_owned(),
            });
        }

        let mut seen = HashSet::new();
        for (index, app) in apps.iter().enumerate() {
            let problem = if app.client_key.is_empty() {
                Some("has an empty `client_key`".to_owned())
            } else if app.client_secret.is_empty() {
                Some(format!(
                    "app `{}` has an empty `client_secret`",
                    app.client_key
                ))
            } else if app
                .auth0_client_secret
                .as_ref()
                .is_some_and(Secret::is_empty)
            {
                Some(format!(
                    "app `{}` has an empty `auth0_client_secret`",
                    app.client_key
                ))
            } else if !seen.insert(&app.client_key) {
                Some(format!("lists app `{}` twice", app.client_key))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(SettingsError::Rejected {
                    key: "credentials.apps",
                    problem: format!("entry {index} {problem}"),
                });
            }
        }
        Ok(())
    }

    fn validate_kubernetes(&self) -> Result<(), SettingsError> {
        let kubernetes = &self.credentials.kubernetes;
        if kubernetes.secrets.is_empty() {
            return Err(SettingsError::Rejected {
                key: "credentials.kubernetes.secrets",
                problem: "is empty: name at least one Secret".to_owned(),
            });
        }

        let mut seen = HashSet::new();
        for name in &kubernetes.secrets {
            if name.is_empty() || !seen.insert(name) {
                return Err(SettingsError::Rejected {
                    key: "credentials.kubernetes.secrets",
                    problem: format!("has an empty or repeated name `{name}`"),
                });
            }
        }

        let keys = &kubernetes.keys;
        for (key, value) in [
            ("credentials.kubernetes.keys.client_key", &keys.client_key),
            (
                "credentials.kubernetes.keys.client_secret",
                &keys.client_secret,
            ),
            (
                "credentials.kubernetes.keys.auth0_client_secret",
                &keys.auth0_client_secret,
            ),
        ] {
            if value.is_empty() {
                return Err(SettingsError::Rejected {
                    key,
                    problem: "must not be empty".to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// The one app that `TIKTOK_CLIENT_KEY` and `TIKTOK_CLIENT_SECRET` (and optionally
/// `TIKTOK_AUTH0_CLIENT_SECRET`) describe, for runs outside a cluster.
fn app_from_env() -> Result<Option<AppSettings>, SettingsError> {
    let read = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let key = read("TIKTOK_CLIENT_KEY");
    let secret = read("TIKTOK_CLIENT_SECRET");
    let auth0_secret = read("TIKTOK_AUTH0_CLIENT_SECRET");

    match (key, secret) {
        (None, None) if auth0_secret.is_none() => Ok(None),
        (Some(client_key), Some(client_secret)) => Ok(Some(AppSettings {
            client_key,
            client_secret: Secret::new(client_secret),
            auth0_client_secret: auth0_secret.map(Secret::new),
        })),
        _ => Err(SettingsError::Invalid(
            "TIKTOK_CLIENT_KEY and TIKTOK_CLIENT_SECRET must be set together".to_owned(),
        )),
    }
}

/// Turns figment's errors into one message per problem, each naming the key and where the
/// value came from (the file, or the environment variable).
fn describe_figment_error(error: figment::Error) -> SettingsError {
    let messages: Vec<String> = error
        .into_iter()
        .map(|error| {
            let key = error.path.join(".");
            let origin = match &error.metadata {
                Some(metadata) if metadata.name.contains("environment") => {
                    let variable = error.path.join("__").to_uppercase();
                    format!(" (from {ENV_PREFIX}{variable})")
                }
                Some(metadata) => match &metadata.source {
                    Some(source) => format!(" (from {} {source})", metadata.name),
                    None => format!(" (from {})", metadata.name),
                },
                None => String::new(),
            };
            if key.is_empty() {
                format!("settings: {}{origin}", error.kind)
            } else {
                format!("setting `{key}`: {}{origin}", error.kind)
            }
        })
        .collect();
    SettingsError::Invalid(messages.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_yaml(yaml: &str) -> Result<Settings, SettingsError> {
        let figment =
            Figment::from(Serialized::defaults(Settings::default())).merge(Yaml::string(yaml));
        Settings::from_figment(figment)
    }

    const ONE_APP: &str = "credentials: {apps: [{client_key: k, client_secret: s}]}\n";

    #[test]
    fn defaults_point_at_tiktok_v2() {
        let settings = with_yaml(ONE_APP).unwrap();
        assert_eq!(
            settings.tiktok.token_url.as_str(),
            "https://open.tiktokapis.com/v2/oauth/token/"
        );
        assert_eq!(settings.listen.port(), 8080);
        assert_eq!(settings.admin_listen.port(), 9090);
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let error = with_yaml(&format!("{ONE_APP}tiktok: {{timeout: soon}}\n")).unwrap_err();
        assert!(error.to_string().contains("tiktok.timeout"), "{error}");
    }

    #[test]
    fn an_unknown_key_is_rejected() {
        let error = with_yaml(&format!("{ONE_APP}tiktok: {{tokn_url: x}}\n")).unwrap_err();
        assert!(error.to_string().contains("tokn_url"), "{error}");
    }

    #[test]
    fn static_source_needs_an_app() {
        let error = with_yaml("{}").unwrap_err();
        assert!(error.to_string().contains("credentials.apps"), "{error}");
    }

    #[test]
    fn repeated_apps_are_rejected() {
        let yaml = "credentials: {apps: [{client_key: k, client_secret: s}, \
                    {client_key: k, client_secret: t}]}";
        let error = with_yaml(yaml).unwrap_err();
        assert!(error.to_string().contains("twice"), "{error}");
    }

    #[test]
    fn kubernetes_source_needs_secret_names() {
        let error = with_yaml("credentials: {source: kubernetes}").unwrap_err();
        assert!(
            error.to_string().contains("credentials.kubernetes.secrets"),
            "{error}"
        );
    }
}
