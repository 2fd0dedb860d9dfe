//! Prometheus metrics, served as OpenMetrics text on the admin listener's `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as MetricRegistry;

use crate::apps::{Entry, Registry};

/// Labels of a request to one of the proxy's public endpoints.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    grant_type: &'static str,
    outcome: &'static str,
}

/// Labels of a public endpoint alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

/// Labels of a call to TikTok.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TikTokCallLabels {
    endpoint: &'static str,
    result: &'static str,
}

/// Labels of a TikTok error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TikTokErrorLabels {
    endpoint: &'static str,
    error: &'static str,
}

/// Labels naming a credential source entry, such as `secret/tiktok-app`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

/// The error categories TikTok documents; anything else is counted as `other`, so that a
/// surprising answer cannot grow the number of series without bound.
const TIKTOK_ERROR_CATEGORIES: [&str; 14] = [
    "access_denied",
    "invalid_client",
    "invalid_grant",
    "invalid_request",
    "invalid_scope",
    "unauthorized_client",
    "unsupported_grant_type",
    "unsupported_response_type",
    "server_error",
    "temporarily_unavailable",
    "rate_limit_exceeded",
    "access_token_invalid",
    "scope_not_authorized",
    "invalid_params",
];

/// Every metric the service keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: MetricRegistry,
    apps: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<EndpointLabels, Histogram>,
    tiktok_duration: Family<TikTokCallLabels, Histogram>,
    tiktok_errors: Family<TikTokErrorLabels, Counter>,
    apps_loaded: Gauge,
    source_usable: Family<SourceLabels, Gauge>,
    credential_reloads: Family<SourceLabels, Counter>,
    watch_errors: Family<SourceLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 16 s: TikTok's calls take tens to hundreds of milliseconds, and the
    // timeout caps them at seconds.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    /// Metrics for a service serving the apps in `apps`.
    pub fn new(apps: Arc<Registry>) -> Self {
        let mut registry = MetricRegistry::with_prefix("tiktok_auth0_proxy");
        let requests = Family::default();
        let request_duration = Family::new_with_constructor(latency_histogram as fn() -> _);
        let tiktok_duration = Family::new_with_constructor(latency_histogram as fn() -> _);
        let tiktok_errors = Family::default();
        let apps_loaded = Gauge::default();
        let source_usable = Family::default();
        let credential_reloads = Family::default();
        let watch_errors = Family::default();

        registry.register(
            "requests",
            "Requests to the public endpoints, by endpoint, grant type and outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer a request to a public endpoint",
            request_duration.clone(),
        );
        registry.register(
            "tiktok_request_duration_seconds",
            "Time of calls to TikTok, by TikTok endpoint and result",
            tiktok_duration.clone(),
        );
        registry.register(
            "tiktok_errors",
            "Errors TikTok answered, by TikTok endpoint and error category",
            tiktok_errors.clone(),
        );
        registry.register(
            "apps_loaded",
            "TikTok apps loaded and served",
            apps_loaded.clone(),
        );
        registry.register(
            "credential_source_usable",
            "Whether a credential source (a Secret) holds a usable app: 1 yes, 0 no",
            source_usable.clone(),
        );
        registry.register(
            "credential_reloads",
            "Changes to a credential source that were applied",
            credential_reloads.clone(),
        );
        registry.register(
            "watch_errors",
            "Errors while watching a credential source",
            watch_errors.clone(),
        );

        Self {
            registry,
            apps,
            requests,
            request_duration,
            tiktok_duration,
            tiktok_errors,
            apps_loaded,
            source_usable,
            credential_reloads,
            watch_errors,
        }
    }

    /// Counts a finished request to a public endpoint.
    pub fn request(
        &self,
        endpoint: &'static str,
        grant_type: Option<&'static str>,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        let labels = RequestLabels {
            endpoint,
            grant_type: grant_type.unwrap_or("none"),
            outcome,
        };
        self.requests.get_or_create(&labels).inc();
        self.request_duration
            .get_or_create(&EndpointLabels { endpoint })
            .observe(elapsed.as_secs_f64());
    }

    /// Records a call to TikTok's `endpoint` that ended with `result` after `elapsed`.
    pub fn tiktok_call(&self, endpoint: &'static str, result: &'static str, elapsed: Duration) {
        self.tiktok_duration
            .get_or_create(&TikTokCallLabels { endpoint, result })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an error TikTok answered.
    pub fn tiktok_error(&self, endpoint: &'static str, error: &str) {
        let error = TIKTOK_ERROR_CATEGORIES
            .iter()
            .find(|category| **category == error)
            .copied()
            .unwrap_or("other");
        self.tiktok_errors
            .get_or_create(&TikTokErrorLabels { endpoint, error })
            .inc();
    }

    /// Counts an applied change to a credential source such as `secret/tiktok-app`.
    pub fn credential_reloaded(&self, source: &str) {
        let labels = SourceLabels {
            source: source.to_owned(),
        };
        self.credential_reloads.get_or_create(&labels).inc();
    }

    /// Counts an error while watching a credential source.
    pub fn watch_error(&self, source: &str) {
        let labels = SourceLabels {
            source: source.to_owned(),
        };
        self.watch_errors.get_or_create(&labels).inc();
    }

    /// The metrics as OpenMetrics text. Gauges that mirror the app registry are read from its
    /// current snapshot here, so they can never disagree with what requests see.
    pub fn encode(&self) -> String {
        let snapshot = self.apps.snapshot();
        self.apps_loaded.set(snapshot.app_count() as i64);
        for (source, entry) in snapshot.entries() {
            let usable = matches!(entry, Entry::Loaded(_));
            let labels = SourceLabels {
                source: source.to_owned(),
            };
            self.source_usable
                .get_or_create(&labels)
                .set(i64::from(usable));
        }

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of [`to_prometheus_text`]'s output.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics text as the classic Prometheus text format, for scrapers that do not
/// ask for OpenMetrics: a counter's family takes its samples' `_total` name, and the `# EOF`
/// marker goes.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match descriptor {
            Some((prefix, rest)) => {
                let name = rest.split(' ').next().unwrap_or_default();
                let rest_after_name = &rest[name.len()..];
                if counters.contains(&name) {
                    text.push_str(&format!("{prefix}{name}_total{rest_after_name}"));
                } else {
                    text.push_str(line);
                }
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counter_families_by_their_samples() {
        let openmetrics = "# HELP x_requests Requests.\n# TYPE x_requests counter\n\
                           x_requests_total{a=\"b\"} 2\n# HELP x_up Up.\n# TYPE x_up gauge\n\
                           x_up 1\n# EOF\n";
        let expected = "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\n\
                        x_requests_total{a=\"b\"} 2\n# HELP x_up Up.\n# TYPE x_up gauge\n\
                        x_up 1\n";
        assert_eq!(to_prometheus_text(openmetrics), expected);
    }
}
