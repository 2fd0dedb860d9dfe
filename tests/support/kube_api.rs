//! A stand-in for the Kubernetes API server: the part of the core v1 Secrets API that kube-rs's
//! watcher depends on, served on loopback for a real `kube::Client`.
//!
//! What it models: one revision counter for every write (as etcd's), `resourceVersion` on
//! objects and lists, LIST and GET, `fieldSelector` on `metadata.name`, WATCH from a version as
//! newline-delimited JSON events over a chunked 200 (ADDED, MODIFIED, DELETED, BOOKMARK), the
//! stream ending after `timeoutSeconds` (capped, so tests run quickly), and a bounded history:
//! a watch from a version older than the history answers 200 with an in-stream `ERROR` event
//! carrying a 410 `Status`, as the real server does. Faults on demand: cut every open watch,
//! answer 500 or 403 for the next requests, go down and come back on the same port.
//!
//! Limitation: `limit` is accepted but lists are never paginated; with a name selector a list
//! holds at most one item, so no watcher here can tell.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Tunables; the defaults keep tests quick.
#[derive(Debug, Clone)]
pub struct KubeApiOptions {
    /// The longest a watch lasts, whatever `timeoutSeconds` asks for.
    pub max_watch: Duration,
    /// How often open watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// How many changes the history keeps; a watch from before them gets a 410.
    pub history_limit: usize,
}

impl Default for KubeApiOptions {
    fn default() -> Self {
        Self {
            max_watch: Duration::from_secs(2),
            bookmark_interval: Duration::from_millis(300),
            history_limit: 100,
        }
    }
}

/// One request as the stand-in saw it, and how it answered.
#[derive(Debug, Clone)]
pub struct KubeRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// The HTTP status answered.
    pub status: u16,
    /// Whether a watch was answered with an in-stream 410 `ERROR` event.
    pub expired: bool,
}

impl KubeRequest {
    /// The value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Whether this is a watch rather than a list or get.
    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch"), Some("true" | "1"))
    }
}

/// The API server stand-in, serving until dropped.
pub struct KubeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    options: KubeApiOptions,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    revision: u64,
    /// Live objects by (namespace, name), as the API server would return them.
    secrets: BTreeMap<(String, String), Value>,
    history: VecDeque<Change>,
    /// Changes up to this revision are gone from the history.
    compacted_through: u64,
    watches: Vec<Watch>,
    connections: Vec<AbortHandle>,
    /// The status to answer instead, and for how many more requests.
    fault: Option<(u16, usize)>,
    down: bool,
    requests: Vec<KubeRequest>,
}

struct Change {
    revision: u64,
    kind: &'static str,
    namespace: String,
    name: String,
    object: Value,
}

struct Watch {
    namespace: String,
    name: Option<String>,
    bookmarks: bool,
    lines: mpsc::UnboundedSender<WatchLine>,
}

enum WatchLine {
    Event(Bytes),
    /// Cut the connection mid-stream, without the chunked terminator.
    Cut,
}

impl Watch {
    fn wants(&self, namespace: &str, name: &str) -> bool {
        self.namespace == namespace && self.name.as_deref().is_none_or(|wanted| wanted == name)
    }
}

impl KubeApi {
    /// A stand-in with the default options on a loopback port.
    pub async fn start() -> Self {
        Self::start_with(KubeApiOptions::default()).await
    }

    pub async fn start_with(options: KubeApiOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                // Real clusters are far past revision 1; starting higher catches code that
                // assumes versions start small.
                revision: 1000,
                compacted_through: 1000,
                ..State::default()
            }),
            options,
        });
        let tasks = vec![
            tokio::spawn(accept(listener, shared.clone())),
            tokio::spawn(send_bookmarks(shared.clone())),
        ];
        Self {
            addr,
            shared,
            tasks,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A real kube-rs client pointed at the stand-in, with `namespace` as its default.
    pub fn client(&self, namespace: &str) -> kube::Client {
        tiktok_auth0_proxy::install_crypto_provider();
        let mut config = kube::Config::new(self.url().parse().unwrap());
        config.default_namespace = namespace.to_owned();
        kube::Client::try_from(config).unwrap()
    }

    /// Creates or replaces Secret `name`, its values base64-encoded as the API server stores
    /// them; returns the new resource version.
    pub fn put_secret(&self, namespace: &str, name: &str, data: &[(&str, &[u8])]) -> u64 {
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(key, value)| {
                let encoded = base64::engine::general_purpose::STANDARD.encode(value);
                ((*key).to_owned(), Value::String(encoded))
            })
            .collect();
        let mut state = self.shared.lock();
        state.revision += 1;
        let revision = state.revision;
        let key = (namespace.to_owned(), name.to_owned());
        let (kind, uid) = match state.secrets.get(&key) {
            Some(old) => ("MODIFIED", old["metadata"]["uid"].clone()),
            None => ("ADDED", json!(format!("uid-{name}-{revision}"))),
        };
        let object = json!({
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": uid,
                "resourceVersion": revision.to_string(),
                "creationTimestamp": "2025-01-01T00:00:00Z",
            },
            "type": "Opaque",
            "data": data,
        });
        state.secrets.insert(key, object.clone());
        self.shared
            .record_change(&mut state, kind, namespace, name, object);
        revision
    }

    /// Deletes Secret `name`; returns whether it existed.
    pub fn delete_secret(&self, namespace: &str, name: &str) -> bool {
        let mut state = self.shared.lock();
        let key = (namespace.to_owned(), name.to_owned());
        let Some(mut object) = state.secrets.remove(&key) else {
            return false;
        };
        state.revision += 1;
        object["metadata"]["resourceVersion"] = json!(state.revision.to_string());
        self.shared
            .record_change(&mut state, "DELETED", namespace, name, object);
        true
    }

    /// Forgets every change so far, as etcd compaction does: a watch from an older version
    /// than the current one gets a 410.
    pub fn compact_history(&self) {
        let mut state = self.shared.lock();
        state.history.clear();
        state.compacted_through = state.revision;
    }

    /// Cuts every open watch mid-stream, as a restarting API server or a load balancer does.
    pub fn drop_watches(&self) {
        let mut state = self.shared.lock();
        for watch in state.watches.drain(..) {
            let _ = watch.lines.send(WatchLine::Cut);
        }
    }

    /// What a long disconnect looks like, in one step so that no bookmark slips in between:
    /// writes elsewhere in the cluster move the revision on, the history is compacted, and every
    /// watch is cut. Watchers resume from a version that is now too old.
    pub fn expire_watches(&self) {
        let mut state = self.shared.lock();
        state.revision += 1;
        state.history.clear();
        state.compacted_through = state.revision;
        for watch in state.watches.drain(..) {
            let _ = watch.lines.send(WatchLine::Cut);
        }
    }

    /// Answers the next `count` requests with `status` (403 or 500) and a `Status` body.
    pub fn fail_next(&self, status: u16, count: usize) {
        self.shared.lock().fault = (count > 0).then_some((status, count));
    }

    /// Becomes unreachable: open connections are closed and new ones are reset at once. The port
    /// stays bound, so that nothing else can take it before [`KubeApi::up`].
    pub fn down(&self) {
        let mut state = self.shared.lock();
        state.down = true;
        state.watches.clear();
        for connection in state.connections.drain(..) {
            connection.abort();
        }
    }

    /// Serves again on the same port.
    pub fn up(&self) {
        self.shared.lock().down = false;
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<KubeRequest> {
        self.shared.lock().requests.clone()
    }

    /// How many watches are open now.
    pub fn open_watches(&self) -> usize {
        let mut state = self.shared.lock();
        state.watches.retain(|watch| !watch.lines.is_closed());
        state.watches.len()
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.down();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn record_change(
        &self,
        state: &mut State,
        kind: &'static str,
        namespace: &str,
        name: &str,
        object: Value,
    ) {
        let line = event_line(kind, &object);
        state.watches.retain(|watch| {
            !watch.wants(namespace, name)
                || watch.lines.send(WatchLine::Event(line.clone())).is_ok()
        });
        state.history.push_back(Change {
            revision: state.revision,
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            object,
        });
        while state.history.len() > self.options.history_limit {
            let oldest = state.history.pop_front().unwrap();
            state.compacted_through = oldest.revision;
        }
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let mut state = shared.lock();
        if state.down {
            reset(stream);
            continue;
        }
        let server = shared.clone();
        let connection = tokio::spawn(async move {
            let service = service_fn(move |request| handle(server.clone(), request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        state
            .connections
            .retain(|connection| !connection.is_finished());
        state.connections.push(connection.abort_handle());
    }
}

/// Closes `stream` with a reset, as a host with nothing listening answers.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn send_bookmarks(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(shared.options.bookmark_interval);
    loop {
        interval.tick().await;
        let mut state = shared.lock();
        let bookmark = json!({
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": state.revision.to_string()},
        });
        let line = event_line("BOOKMARK", &bookmark);
        state.watches.retain(|watch| {
            !watch.bookmarks || watch.lines.send(WatchLine::Event(line.clone())).is_ok()
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let query: Vec<(String, String)> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let mut record = KubeRequest {
        method,
        path,
        query,
        status: 200,
        expired: false,
    };

    let mut state = shared.lock();
    let response = answer(&shared, &mut state, &mut record);
    record.status = response.status().as_u16();
    state.requests.push(record);
    Ok(response)
}

fn answer(shared: &Shared, state: &mut State, request: &mut KubeRequest) -> Response<Body> {
    if let Some((status, remaining)) = state.fault.as_mut() {
        let status = *status;
        *remaining -= 1;
        if *remaining == 0 {
            state.fault = None;
        }
        return fault(status);
    }
    if request.method != "GET" {
        return json_response(
            405,
            status_object(405, "MethodNotAllowed", "only GET is served"),
        );
    }

    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let (namespace, name) = match segments.as_slice() {
        ["api", "v1", "namespaces", namespace, "secrets"] => ((*namespace).to_owned(), None),
        ["api", "v1", "namespaces", namespace, "secrets", name] => {
            ((*namespace).to_owned(), Some((*name).to_owned()))
        }
        _ => {
            return json_response(
                404,
                status_object(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            );
        }
    };
    if let Some(name) = name {
        return match state.secrets.get(&(namespace, name.clone())) {
            Some(object) => json_response(200, object.clone()),
            None => json_response(
                404,
                status_object(404, "NotFound", &format!("secrets \"{name}\" not found")),
            ),
        };
    }

    let selected = match name_selector(request.param("fieldSelector")) {
        Ok(selected) => selected,
        Err(message) => return json_response(400, status_object(400, "BadRequest", &message)),
    };
    if request.is_watch() {
        watch(shared, state, request, namespace, selected)
    } else {
        list(state, &namespace, selected.as_deref())
    }
}

/// The name a `fieldSelector` pins, if any; the real server rejects fields Secrets do not index.
fn name_selector(selector: Option<&str>) -> Result<Option<String>, String> {
    let mut name = None;
    for term in selector
        .unwrap_or("")
        .split(',')
        .filter(|term| !term.is_empty())
    {
        let (field, value) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .ok_or_else(|| format!("invalid field selector term {term:?}"))?;
        match field {
            "metadata.name" => name = Some(value.to_owned()),
            "metadata.namespace" | "type" => {}
            _ => return Err(format!("field label not supported: {field}")),
        }
    }
    Ok(name)
}

fn list(state: &State, namespace: &str, name: Option<&str>) -> Response<Body> {
    let items: Vec<Value> = state
        .secrets
        .iter()
        .filter(|((ns, secret), _)| ns == namespace && name.is_none_or(|name| name == secret))
        .map(|(_, object)| {
            // List items carry no kind or apiVersion; the list says them once.
            let mut item = object.clone();
            let fields = item.as_object_mut().unwrap();
            fields.remove("kind");
            fields.remove("apiVersion");
            item
        })
        .collect();
    json_response(
        200,
        json!({
            "kind": "SecretList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": state.revision.to_string()},
            "items": items,
        }),
    )
}

fn watch(
    shared: &Shared,
    state: &mut State,
    request: &mut KubeRequest,
    namespace: String,
    name: Option<String>,
) -> Response<Body> {
    let asked = request
        .param("timeoutSeconds")
        .and_then(|seconds| seconds.parse().ok())
        .map_or(shared.options.max_watch, Duration::from_secs);
    let deadline = tokio::time::Instant::now() + asked.min(shared.options.max_watch);
    let (lines, receiver) = mpsc::unbounded_channel();
    let watch = Watch {
        namespace,
        name,
        bookmarks: request.param("allowWatchBookmarks") == Some("true"),
        lines,
    };

    match request
        .param("resourceVersion")
        .filter(|version| !version.is_empty() && *version != "0")
    {
        // From "any" version: the current objects as ADDED, then changes.
        None => {
            for ((ns, name), object) in &state.secrets {
                if watch.wants(ns, name) {
                    let _ = watch
                        .lines
                        .send(WatchLine::Event(event_line("ADDED", object)));
                }
            }
        }
        Some(version) => {
            let Ok(version) = version.parse::<u64>() else {
                return json_response(
                    400,
                    status_object(400, "BadRequest", "invalid resourceVersion"),
                );
            };
            if version < state.compacted_through {
                request.expired = true;
                let message = format!(
                    "too old resource version: {version} ({})",
                    state.compacted_through + 1
                );
                let error = event_line("ERROR", &status_object(410, "Expired", &message));
                let _ = watch.lines.send(WatchLine::Event(error));
                drop(watch);
                return stream_response(receiver, deadline);
            }
            for change in state
                .history
                .iter()
                .filter(|change| change.revision > version)
            {
                if watch.wants(&change.namespace, &change.name) {
                    let line = event_line(change.kind, &change.object);
                    let _ = watch.lines.send(WatchLine::Event(line));
                }
            }
        }
    }
    state.watches.push(watch);
    stream_response(receiver, deadline)
}

/// A chunked 200 that carries `receiver`'s lines until the deadline, the sender's end, or a cut.
fn stream_response(
    receiver: mpsc::UnboundedReceiver<WatchLine>,
    deadline: tokio::time::Instant,
) -> Response<Body> {
    let lines = futures::stream::unfold(Some(receiver), move |receiver| async move {
        let mut receiver = receiver?;
        tokio::select! {
            line = receiver.recv() => match line? {
                WatchLine::Event(bytes) => Some((Ok(Frame::data(bytes)), Some(receiver))),
                // An error makes hyper drop the connection without the final chunk.
                WatchLine::Cut => Some((Err(io::Error::other("watch cut")), None)),
            },
            () = tokio::time::sleep_until(deadline) => None,
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(StreamBody::new(lines.boxed()).boxed_unsync())
        .unwrap()
}

fn fault(status: u16) -> Response<Body> {
    let body = match status {
        403 => status_object(
            403,
            "Forbidden",
            "secrets is forbidden: User \"system:serviceaccount:test:tiktok-auth0-proxy\" \
             cannot list resource \"secrets\" in API group \"\" in the namespace \"test\"",
        ),
        _ => status_object(
            status,
            "InternalError",
            "Internal error occurred: etcdserver: request timed out",
        ),
    };
    json_response(status, body)
}

fn json_response(status: u16, body: Value) -> Response<Body> {
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(bytes)
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .unwrap()
}
