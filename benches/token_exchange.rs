//! Measures what the proxy adds to a token exchange: latency, CPU time and memory.
//!
//! The release binary runs as its own process against the TikTok sandbox on loopback. The same
//! exchanges are made directly against the sandbox and through the proxy, side by side in one
//! run, so the figures compare like with like on a noisy machine. CPU time comes from
//! `/proc/<pid>/stat`, which is steadier than requests per second.
//!
//!     cargo bench --bench token_exchange
//!
//! `BENCH_REQUESTS` (default 4000) and `BENCH_CONCURRENCY` (default 16) change the load.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Clock ticks of user plus system CPU time the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("a Linux /proc");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let utime: u64 = fields[11].parse().unwrap();
    let stime: u64 = fields[12].parse().unwrap();
    utime + stime
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn ticks_per_second() -> u64 {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output();
    output
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

struct Run {
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Run {
    fn percentile(&self, p: f64) -> f64 {
        let index = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[index].as_secs_f64() * 1000.0
    }

    fn print(&self, label: &str) {
        println!(
            "{label:<8} {:>6} exchanges  {:>8.0}/s  p50 {:>6.3} ms  p90 {:>6.3} ms  p99 {:>6.3} ms",
            self.latencies.len(),
            self.latencies.len() as f64 / self.wall.as_secs_f64(),
            self.percentile(0.50),
            self.percentile(0.90),
            self.percentile(0.99),
        );
    }
}

/// `requests` code exchanges against `url`, `concurrency` at a time, each with a fresh code.
async fn run(
    sandbox: &Arc<TestSandbox>,
    url: &str,
    id_name: &'static str,
    requests: usize,
    concurrency: usize,
) -> Run {
    let client = http();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, sandbox, url) = (
                client.clone(),
                next.clone(),
                sandbox.clone(),
                url.to_owned(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                    let code = sandbox.code(APP_A_KEY);
                    let form = [
                        ("grant_type", "authorization_code"),
                        (id_name, APP_A_KEY),
                        ("client_secret", APP_A_SECRET),
                        ("code", code.as_str()),
                        ("redirect_uri", REDIRECT_URI),
                    ];
                    let sent = Instant::now();
                    let response = client.post(&url).form(&form).send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.bytes().await.unwrap();
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let wall = started.elapsed();
    latencies.sort();
    Run { latencies, wall }
}

#[tokio::main]
async fn main() {
    let requests = env_number("BENCH_REQUESTS", 4000);
    let concurrency = env_number("BENCH_CONCURRENCY", 16);
    let sandbox = Arc::new(TestSandbox::start().await);
    let config = config_file(&sandbox, "");
    let proxy = ProxyProcess::start(&[
        ("TIKTOK_AUTH0_PROXY_CONFIG", config.display().to_string()),
        (
            "RUST_LOG",
            "warn,tiktok_auth0_proxy::server=info".to_owned(),
        ),
    ])
    .await;
    let pid = proxy.child.id().unwrap();
    let direct_url = sandbox.url("/v2/oauth/token/");
    let proxy_url = proxy.url("/token");

    println!("token exchange, {requests} requests, {concurrency} concurrent, loopback");
    let warm_up = requests / 10;
    run(&sandbox, &proxy_url, "client_id", warm_up, concurrency).await;
    run(&sandbox, &direct_url, "client_key", warm_up, concurrency).await;
    let idle_rss = status_kib(pid, "VmRSS:");

    let direct = run(&sandbox, &direct_url, "client_key", requests, concurrency).await;
    let cpu_before = cpu_ticks(pid);
    let proxied = run(&sandbox, &proxy_url, "client_id", requests, concurrency).await;
    let cpu_ticks_used = cpu_ticks(pid) - cpu_before;

    direct.print("direct");
    proxied.print("proxied");
    let cpu_us = cpu_ticks_used as f64 * 1e6 / ticks_per_second() as f64 / requests as f64;
    println!(
        "added latency: p50 {:+.3} ms, p99 {:+.3} ms",
        proxied.percentile(0.50) - direct.percentile(0.50),
        proxied.percentile(0.99) - direct.percentile(0.99),
    );
    println!("proxy CPU time: {cpu_us:.0} µs per exchange (user + system)");
    println!(
        "proxy memory: RSS {} KiB after warm-up, {} KiB after the run, peak {} KiB",
        idle_rss,
        status_kib(pid, "VmRSS:"),
        status_kib(pid, "VmHWM:"),
    );
    let _ = std::fs::remove_file(config);
}
