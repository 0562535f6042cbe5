//! Benchmark baseline: the ExtProc design this project replaces (Envoy `ext_proc`, BUFFERED request
//! body, `failure_mode_allow`), doing the same work as the wasm filter — strip spoofed headers,
//! parse, call the same Classify RPC, rewrite `model`, set the routing headers, clear the route
//! cache, copy the decision onto the response — with the filter crate's own parsing and rewrite
//! code, so the comparison measures the architecture, not two implementations.

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation, processing_request, processing_response, BodyMutation, BodyResponse, CommonResponse,
    HeaderMutation, HeadersResponse, HttpHeaders, ProcessingRequest, ProcessingResponse,
};
use router_proto::v1::classifier_client::ClassifierClient;
use router_proto::v1::ClassifyRequest;
use router_proto::vocabulary;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};
use wasm_filter::json_edit;
use wasm_filter::openai::{self, Endpoint as ApiEndpoint};

#[derive(Clone)]
pub struct ExtProcRouter {
    classifier: ClassifierClient<Channel>,
    default_model: String,
    timeout: Duration,
}

impl ExtProcRouter {
    pub fn new(classifier: SocketAddr, default_model: &str, timeout: Duration) -> Self {
        let channel = Endpoint::from_shared(format!("http://{classifier}")).expect("valid uri").connect_lazy();
        Self { classifier: ClassifierClient::new(channel), default_model: default_model.into(), timeout }
    }

    /// Decides the model for a buffered body; returns (new body, routing headers).
    async fn route(&self, path: &str, body: &[u8]) -> Option<(Vec<u8>, Vec<(String, String)>)> {
        let endpoint = ApiEndpoint::from_path(path)?;
        let request = openai::parse_request(endpoint, body, 2).ok()?;
        if request.model != "MoM" && request.model != "auto" {
            return Some((body.to_vec(), vec![(vocabulary::SELECTED_MODEL_HEADER.into(), request.model)]));
        }
        let mut client = self.classifier.clone();
        let call = client.classify(ClassifyRequest { text: request.text, ..Default::default() });
        let decision = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(reply)) => reply.into_inner().decision,
            _ => None,
        };
        let (model, mut headers) = match decision.filter(|d| !d.selected_model.is_empty()) {
            // The same renderer as the filter's: the same decision headers for the same decision.
            Some(d) => (d.selected_model.clone(), vocabulary::decision_headers(&d, &d.selected_model, vocabulary::PREFIX)),
            None => (
                self.default_model.clone(),
                vec![
                    (format!("{}{}", vocabulary::PREFIX, vocabulary::suffix::SELECTED_MODEL), self.default_model.clone()),
                    (format!("{}{}", vocabulary::PREFIX, vocabulary::suffix::FALLBACK), "classifier".to_string()),
                ],
            ),
        };
        headers.push((vocabulary::SELECTED_MODEL_HEADER.into(), model.clone()));
        let span = json_edit::top_level_value_span(body, "model")?;
        Some((json_edit::splice(body, span, &json_edit::json_string(&model)), headers))
    }

    pub async fn serve(self, addr: SocketAddr) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(ExternalProcessorServer::new(self))
            .serve(addr)
            .await
    }
}

fn header_value(h: &HeaderValue) -> String {
    if h.raw_value.is_empty() {
        h.value.clone()
    } else {
        String::from_utf8_lossy(&h.raw_value).into_owned()
    }
}

fn set_headers(headers: &[(String, String)]) -> Vec<HeaderValueOption> {
    headers
        .iter()
        .map(|(k, v)| HeaderValueOption {
            header: Some(HeaderValue { key: k.clone(), raw_value: v.clone().into_bytes(), ..Default::default() }),
            ..Default::default()
        })
        .collect()
}

fn common(header_mutation: Option<HeaderMutation>, body: Option<Vec<u8>>, clear_route_cache: bool) -> Option<CommonResponse> {
    Some(CommonResponse {
        header_mutation,
        body_mutation: body.map(|b| BodyMutation { mutation: Some(body_mutation::Mutation::Body(b)) }),
        clear_route_cache,
        ..Default::default()
    })
}

fn reply(response: processing_response::Response) -> ProcessingResponse {
    ProcessingResponse { response: Some(response), ..Default::default() }
}

type ProcessStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for ExtProcRouter {
    type ProcessStream = ProcessStream;

    async fn process(&self, request: Request<Streaming<ProcessingRequest>>) -> Result<Response<ProcessStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let router = self.clone();
        tokio::spawn(async move {
            let mut path = String::new();
            let mut decision_headers: Vec<(String, String)> = Vec::new();
            while let Some(Ok(message)) = inbound.next().await {
                let response = match message.request {
                    Some(processing_request::Request::RequestHeaders(HttpHeaders { headers, .. })) => {
                        let mut remove = Vec::new();
                        for h in headers.map(|m| m.headers).unwrap_or_default() {
                            if h.key == ":path" {
                                path = header_value(&h);
                            } else if h.key == vocabulary::SELECTED_MODEL_HEADER || h.key.starts_with(vocabulary::PREFIX) {
                                remove.push(h.key.clone());
                            }
                        }
                        let mutation = HeaderMutation { remove_headers: remove, ..Default::default() };
                        reply(processing_response::Response::RequestHeaders(HeadersResponse {
                            response: common(Some(mutation), None, false),
                        }))
                    }
                    Some(processing_request::Request::RequestBody(body)) => match router.route(&path, &body.body).await {
                        Some((new_body, headers)) => {
                            // Envoy rejects a body mutation whose length disagrees with content-length.
                            let mut request_headers = headers.clone();
                            request_headers.push(("content-length".into(), new_body.len().to_string()));
                            let mutation = HeaderMutation { set_headers: set_headers(&request_headers), ..Default::default() };
                            decision_headers = headers;
                            reply(processing_response::Response::RequestBody(BodyResponse {
                                response: common(Some(mutation), Some(new_body), true),
                            }))
                        }
                        None => reply(processing_response::Response::RequestBody(BodyResponse { response: common(None, None, false) })),
                    },
                    Some(processing_request::Request::ResponseHeaders(_)) => {
                        let mutation = HeaderMutation { set_headers: set_headers(&decision_headers), ..Default::default() };
                        reply(processing_response::Response::ResponseHeaders(HeadersResponse {
                            response: common(Some(mutation), None, false),
                        }))
                    }
                    _ => continue,
                };
                if tx.send(Ok(response)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
