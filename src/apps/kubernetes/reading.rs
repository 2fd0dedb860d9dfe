//! What one Kubernetes Secret says about its app: pure logic, no I/O.

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret as KubeSecret;

use crate::apps::{App, Entry};
use crate::secret::Secret;
use crate::settings::SecretKeys;

/// The app a Secret holds, or why it holds none.
///
/// Readings are compared with the last one applied, so that a relist or an edit to unrelated
/// keys or labels is not counted or logged as a credential change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reading {
    /// The Secret holds a usable app.
    Loaded(Credentials),
    /// The Secret exists, but these keys are missing or unusable.
    Unusable(Vec<KeyProblem>),
    /// The Secret does not exist.
    Absent,
}

/// An app's values as read from its Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Credentials {
    pub(super) client_key: String,
    client_secret: Secret,
    auth0_secret: Option<Secret>,
}

/// A key of the Secret that cannot be used, and why. It names the key, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeyProblem {
    pub(super) key: String,
    kind: ProblemKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProblemKind {
    Missing,
    Empty,
    NotUtf8,
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        match self.kind {
            ProblemKind::Missing => write!(f, "missing key `{key}`"),
            ProblemKind::Empty => write!(f, "key `{key}` is empty"),
            ProblemKind::NotUtf8 => write!(f, "key `{key}` is not UTF-8"),
        }
    }
}

/// The problems as one line, such as "missing key `client_secret`, key `client_key` is empty".
pub(super) fn describe(problems: &[KeyProblem]) -> String {
    let described: Vec<String> = problems.iter().map(ToString::to_string).collect();
    described.join(", ")
}

impl Reading {
    /// Reads the app in `secret` under the key names in `keys`.
    ///
    /// Every unusable key is reported, not only the first, so that an operator fixes a Secret
    /// in one go.
    pub(super) fn from_secret(secret: &KubeSecret, keys: &SecretKeys) -> Self {
        let mut problems = Vec::new();
        let mut value = |key: &str, required: bool| match text_value(secret, key) {
            Ok(value) => value,
            Err(ProblemKind::Missing) if !required => None,
            Err(kind) => {
                problems.push(KeyProblem {
                    key: key.to_owned(),
                    kind,
                });
                None
            }
        };

        let client_key = value(&keys.client_key, true);
        let client_secret = value(&keys.client_secret, true);
        let auth0_secret = value(&keys.auth0_client_secret, false);
        match (client_key, client_secret) {
            (Some(client_key), Some(client_secret)) if problems.is_empty() => {
                Reading::Loaded(Credentials {
                    client_key,
                    client_secret: Secret::new(client_secret),
                    auth0_secret: auth0_secret.map(Secret::new),
                })
            }
            _ => Reading::Unusable(problems),
        }
    }

    /// The registry entry for this reading.
    pub(super) fn to_entry(&self) -> Entry {
        match self {
            Reading::Loaded(credentials) => Entry::Loaded(Arc::new(App::new(
                credentials.client_key.clone(),
                credentials.client_secret.clone(),
                credentials.auth0_secret.clone(),
            ))),
            Reading::Unusable(problems) => Entry::Unusable(describe(problems)),
            Reading::Absent => Entry::Absent,
        }
    }
}

/// The value under `key` as text; an empty value counts as a problem, as in the settings.
fn text_value(secret: &KubeSecret, key: &str) -> Result<Option<String>, ProblemKind> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .ok_or(ProblemKind::Missing)?;
    if bytes.0.is_empty() {
        return Err(ProblemKind::Empty);
    }
    String::from_utf8(bytes.0.clone())
        .map(Some)
        .map_err(|_| ProblemKind::NotUtf8)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn keys() -> SecretKeys {
        SecretKeys {
            client_key: "client_key".into(),
            client_secret: "client_secret".into(),
            auth0_client_secret: "auth0_client_secret".into(),
        }
    }

    fn secret(data: &[(&str, &[u8])]) -> KubeSecret {
        let data: BTreeMap<String, ByteString> = data
            .iter()
            .map(|(key, value)| ((*key).to_owned(), ByteString(value.to_vec())))
            .collect();
        KubeSecret {
            data: Some(data),
            ..KubeSecret::default()
        }
    }

    fn problems(reading: &Reading) -> String {
        match reading {
            Reading::Unusable(problems) => describe(problems),
            other => panic!("expected an unusable reading, got {other:?}"),
        }
    }

    #[test]
    fn a_complete_secret_gives_an_app() {
        let reading = Reading::from_secret(
            &secret(&[("client_key", b"key"), ("client_secret", b"tiktok")]),
            &keys(),
        );
        let Entry::Loaded(app) = reading.to_entry() else {
            panic!("expected an app, got {reading:?}");
        };
        assert_eq!(app.client_key(), "key");
        assert_eq!(app.tiktok_secret().expose(), "tiktok");
        assert!(app.accepts_auth0_secret("tiktok"));
    }

    #[test]
    fn auth0_secret_is_optional_and_used_when_present() {
        let data: &[(&str, &[u8])] = &[
            ("client_key", b"key"),
            ("client_secret", b"tiktok"),
            ("auth0_client_secret", b"auth0"),
        ];
        let Entry::Loaded(app) = Reading::from_secret(&secret(data), &keys()).to_entry() else {
            panic!("expected an app");
        };
        assert!(app.accepts_auth0_secret("auth0"));
        assert!(!app.accepts_auth0_secret("tiktok"));
    }

    #[test]
    fn key_names_come_from_the_settings() {
        let keys = SecretKeys {
            client_key: "id".into(),
            client_secret: "secret".into(),
            auth0_client_secret: "auth0".into(),
        };
        let reading = Reading::from_secret(&secret(&[("id", b"k"), ("secret", b"s")]), &keys);
        assert!(matches!(reading, Reading::Loaded(_)), "{reading:?}");
    }

    #[test]
    fn a_missing_key_is_named() {
        let reading = Reading::from_secret(&secret(&[("client_key", b"key")]), &keys());
        assert_eq!(problems(&reading), "missing key `client_secret`");
    }

    #[test]
    fn a_secret_without_data_misses_both_required_keys() {
        let reading = Reading::from_secret(&KubeSecret::default(), &keys());
        assert_eq!(
            problems(&reading),
            "missing key `client_key`, missing key `client_secret`"
        );
    }

    #[test]
    fn empty_and_non_utf8_values_are_named_without_the_value() {
        let data: &[(&str, &[u8])] = &[
            ("client_key", b""),
            ("client_secret", b"\xff\xfehunter2"),
            ("auth0_client_secret", b""),
        ];
        let described = problems(&Reading::from_secret(&secret(data), &keys()));
        assert_eq!(
            described,
            "key `client_key` is empty, key `client_secret` is not UTF-8, \
             key `auth0_client_secret` is empty"
        );
        assert!(!described.contains("hunter2"));
    }

    #[test]
    fn an_unusable_optional_key_makes_the_app_unusable() {
        let data: &[(&str, &[u8])] = &[
            ("client_key", b"key"),
            ("client_secret", b"tiktok"),
            ("auth0_client_secret", b"\xc3"),
        ];
        let reading = Reading::from_secret(&secret(data), &keys());
        assert_eq!(problems(&reading), "key `auth0_client_secret` is not UTF-8");
    }

    #[test]
    fn readings_compare_by_content() {
        let read = |value: &[u8]| {
            Reading::from_secret(
                &secret(&[("client_key", b"key"), ("client_secret", value)]),
                &keys(),
            )
        };
        assert_eq!(read(b"one"), read(b"one"));
        assert_ne!(read(b"one"), read(b"two"));
        assert_ne!(read(b"one"), Reading::Absent);
    }
}
