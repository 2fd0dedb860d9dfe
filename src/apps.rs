//! The registry of TikTok apps: one immutable snapshot, swapped whole when a source changes.
//!
//! A source (the settings, or one Kubernetes Secret) owns one named entry. Each change to an
//! entry rebuilds the snapshot and stores it atomically, so a request always sees a whole,
//! consistent set of apps, and a lookup is all a request does with it.

pub mod kubernetes;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::secret::Secret;
use crate::settings::AppSettings;

/// One TikTok developer app.
#[derive(Debug)]
pub struct App {
    client_key: String,
    tiktok_secret: Secret,
    auth0_secret: Option<Secret>,
}

impl App {
    /// An app; `auth0_secret` is what Auth0 must present, the TikTok secret when `None`.
    pub fn new(client_key: String, tiktok_secret: Secret, auth0_secret: Option<Secret>) -> Self {
        Self {
            client_key,
            tiktok_secret,
            auth0_secret,
        }
    }

    /// TikTok's client key, which Auth0 sends as `client_id`.
    pub fn client_key(&self) -> &str {
        &self.client_key
    }

    /// TikTok's client secret, sent only to TikTok.
    pub fn tiktok_secret(&self) -> &Secret {
        &self.tiktok_secret
    }

    /// Whether `presented` is Auth0's secret for this app, compared in constant time.
    pub fn accepts_auth0_secret(&self, presented: &str) -> bool {
        self.auth0_secret
            .as_ref()
            .unwrap_or(&self.tiktok_secret)
            .matches(presented)
    }
}

impl From<&AppSettings> for App {
    fn from(settings: &AppSettings) -> Self {
        App::new(
            settings.client_key.clone(),
            settings.client_secret.clone(),
            settings.auth0_client_secret.clone(),
        )
    }
}

/// What one source entry holds right now.
#[derive(Debug, Clone)]
pub enum Entry {
    /// Not read yet.
    Pending,
    /// Holds a usable app.
    Loaded(Arc<App>),
    /// Was read but cannot be used; the reason names keys, never values.
    Unusable(String),
    /// Was looked for and does not exist.
    Absent,
}

/// The apps in force, and what each source entry said when they were built.
#[derive(Debug, Default)]
pub struct Snapshot {
    apps: HashMap<String, Arc<App>>,
    entries: BTreeMap<String, Entry>,
}

impl Snapshot {
    /// The app whose client key is `client_key`.
    pub fn app(&self, client_key: &str) -> Option<&Arc<App>> {
        self.apps.get(client_key)
    }

    /// How many apps are loaded.
    pub fn app_count(&self) -> usize {
        self.apps.len()
    }

    /// Whether every entry has been read and at least one app is loaded.
    pub fn is_ready(&self) -> bool {
        !self.apps.is_empty() && self.pending().next().is_none()
    }

    /// Every entry, by name, with what it holds.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries
            .iter()
            .map(|(name, entry)| (name.as_str(), entry))
    }

    /// Entries not read yet.
    pub fn pending(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|(_, entry)| matches!(entry, Entry::Pending))
            .map(|(name, _)| name.as_str())
    }

    /// Entries that are read but give no app, with the reason.
    pub fn problems(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().filter_map(|(name, entry)| match entry {
            Entry::Unusable(reason) => Some((name.as_str(), reason.as_str())),
            Entry::Absent => Some((name.as_str(), "not found")),
            Entry::Pending | Entry::Loaded(_) => None,
        })
    }

    fn build(entries: BTreeMap<String, Entry>) -> Self {
        let mut apps = HashMap::new();
        let mut entries = entries;
        let mut duplicates = Vec::new();
        for (name, entry) in &entries {
            if let Entry::Loaded(app) = entry {
                // Entries are visited in name order, so the first name keeps the app and the
                // outcome does not depend on which Secret changed last.
                if apps.contains_key(app.client_key()) {
                    duplicates.push((name.clone(), app.client_key().to_owned()));
                } else {
                    apps.insert(app.client_key().to_owned(), app.clone());
                }
            }
        }
        for (name, client_key) in duplicates {
            let reason = format!("client key `{client_key}` is already served by another entry");
            entries.insert(name, Entry::Unusable(reason));
        }
        Self { apps, entries }
    }
}

impl fmt::Display for Snapshot {
    /// A one-line summary for readiness answers: what is missing, without any value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} app(s) loaded", self.apps.len())?;
        for name in self.pending() {
            write!(f, "; {name}: not synced yet")?;
        }
        for (name, reason) in self.problems() {
            write!(f, "; {name}: {reason}")?;
        }
        Ok(())
    }
}

/// The live set of apps, shared by every request and updated by the sources.
#[derive(Debug)]
pub struct Registry {
    snapshot: ArcSwap<Snapshot>,
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl Registry {
    /// A registry whose entries are all pending until their source reports.
    pub fn new(entry_names: impl IntoIterator<Item = String>) -> Self {
        let entries: BTreeMap<_, _> = entry_names
            .into_iter()
            .map(|name| (name, Entry::Pending))
            .collect();
        Self {
            snapshot: ArcSwap::from_pointee(Snapshot::build(entries.clone())),
            entries: Mutex::new(entries),
        }
    }

    /// A registry holding the apps listed in the settings, ready at once.
    pub fn from_settings(apps: &[AppSettings]) -> Self {
        let registry = Self::new(apps.iter().map(|app| app.client_key.clone()));
        for app in apps {
            registry.set(&app.client_key, Entry::Loaded(Arc::new(App::from(app))));
        }
        registry
    }

    /// The apps in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Replaces what entry `name` holds and publishes a new snapshot.
    pub fn set(&self, name: &str, entry: Entry) {
        // NB: the lock spans the rebuild and the store, so two sources changing at once cannot
        // publish their snapshots out of order.
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        entries.insert(name.to_owned(), entry);
        self.snapshot
            .store(Arc::new(Snapshot::build(entries.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(key: &str, secret: &str) -> Entry {
        Entry::Loaded(Arc::new(App::new(key.into(), Secret::new(secret), None)))
    }

    #[test]
    fn auth0_secret_defaults_to_tiktok_secret() {
        let plain = App::new("k".into(), Secret::new("tiktok"), None);
        assert!(plain.accepts_auth0_secret("tiktok"));

        let separate = App::new(
            "k".into(),
            Secret::new("tiktok"),
            Some(Secret::new("auth0")),
        );
        assert!(separate.accepts_auth0_secret("auth0"));
        assert!(!separate.accepts_auth0_secret("tiktok"));
    }

    #[test]
    fn ready_only_when_every_entry_reported_and_an_app_loaded() {
        let registry = Registry::new(["a".to_owned(), "b".to_owned()]);
        assert!(!registry.snapshot().is_ready());

        registry.set("a", app("key-a", "s"));
        assert!(!registry.snapshot().is_ready(), "b is still pending");

        registry.set("b", Entry::Unusable("missing key `client_secret`".into()));
        let snapshot = registry.snapshot();
        assert!(snapshot.is_ready());
        assert_eq!(snapshot.app_count(), 1);
        assert!(
            snapshot
                .to_string()
                .contains("b: missing key `client_secret`")
        );
    }

    #[test]
    fn a_snapshot_taken_earlier_is_unchanged_by_later_updates() {
        let registry = Registry::new(["a".to_owned()]);
        registry.set("a", app("key-a", "old"));
        let before = registry.snapshot();

        registry.set("a", app("key-a", "new"));
        assert!(before.app("key-a").unwrap().accepts_auth0_secret("old"));
        assert!(
            registry
                .snapshot()
                .app("key-a")
                .unwrap()
                .accepts_auth0_secret("new")
        );
    }

    #[test]
    fn a_client_key_served_twice_keeps_the_first_entry() {
        let registry = Registry::new(["a".to_owned(), "b".to_owned()]);
        registry.set("b", app("same", "from-b"));
        registry.set("a", app("same", "from-a"));
        let snapshot = registry.snapshot();
        assert!(snapshot.app("same").unwrap().accepts_auth0_secret("from-a"));
        assert!(snapshot.to_string().contains("b: client key `same`"));
    }
}
