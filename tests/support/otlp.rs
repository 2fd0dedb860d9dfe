//! An OTLP trace receiver on loopback, over HTTP/protobuf or gRPC, that keeps what it gets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// Which OTLP transport the receiver speaks.
#[derive(Debug, Clone, Copy)]
pub enum Protocol {
    HttpProtobuf,
    Grpc,
}

impl Protocol {
    /// The value of `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn env_value(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::Grpc => "grpc",
        }
    }
}

/// A span as received, with the resource it came with.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub span: Span,
    pub resource: Option<Resource>,
}

impl ReceivedSpan {
    pub fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }

    pub fn parent_span_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }

    /// An attribute's value, as text.
    pub fn attribute(&self, key: &str) -> Option<String> {
        find(&self.span.attributes, key)
    }

    /// An attribute's value when it is an integer, as OpenTelemetry's semantic conventions
    /// want status codes and ports.
    pub fn int_attribute(&self, key: &str) -> Option<i64> {
        let value = self
            .span
            .attributes
            .iter()
            .find(|kv| kv.key == key)?
            .value
            .as_ref()?;
        match value.value.as_ref()? {
            AnyValue::IntValue(number) => Some(*number),
            _ => None,
        }
    }

    pub fn resource_attribute(&self, key: &str) -> Option<String> {
        find(&self.resource.as_ref()?.attributes, key)
    }
}

fn find(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        AnyValue::StringValue(text) => text.clone(),
        AnyValue::IntValue(number) => number.to_string(),
        AnyValue::BoolValue(flag) => flag.to_string(),
        AnyValue::DoubleValue(number) => number.to_string(),
        other => format!("{other:?}"),
    })
}

/// The receiver; spans accumulate in `spans` as they arrive.
#[derive(Clone, Default)]
pub struct Receiver {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl Receiver {
    /// Starts a receiver for `protocol` on a loopback port.
    pub async fn start(protocol: Protocol) -> (Self, SocketAddr) {
        let receiver = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        match protocol {
            Protocol::HttpProtobuf => {
                let router = Router::new()
                    .route("/v1/traces", post(export_http))
                    .with_state(receiver.clone());
                tokio::spawn(async move { axum::serve(listener, router).await });
            }
            Protocol::Grpc => {
                let service = TraceServiceServer::new(receiver.clone());
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                tokio::spawn(async move {
                    tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming(incoming)
                        .await
                });
            }
        }
        (receiver, addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    fn keep(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.resource_spans {
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    spans.push(ReceivedSpan {
                        span,
                        resource: resource_spans.resource.clone(),
                    });
                }
            }
        }
    }
}

async fn export_http(State(receiver): State<Receiver>, body: Bytes) -> impl IntoResponse {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf request");
    receiver.keep(request);
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    ([(header::CONTENT_TYPE, "application/x-protobuf")], answer)
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.keep(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}
