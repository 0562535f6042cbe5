//! A test double of the classifier sidecar: a hand-framed gRPC server whose behaviour tests switch
//! at run time (decide, stall, answer garbage, fail with a status, or go away).

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use router_proto::v1::{CategoryScore, ClassifyRequest, ClassifyResponse, Decision, Reason, StoreReply, StoreRequest};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answer with [`keyword_decision`].
    Decide,
    /// Answer with this decision.
    Fixed(Decision),
    /// Wait, then decide (to exceed the filter's timeout).
    Stall(Duration),
    /// A reply that is not a ClassifyResponse.
    Garbage,
    /// Fail with this gRPC status code.
    Status(u32),
}

/// Routes prompts mentioning maths to the math model, everything else to the general model.
pub fn keyword_decision(request: &ClassifyRequest) -> Decision {
    let all_text = format!(
        "{} {}",
        request.text,
        request.context.iter().map(|t| t.content.as_str()).collect::<Vec<_>>().join(" ")
    )
    .to_lowercase();
    let math = ["integral", "derivative", "equation", "math", "theorem"].iter().any(|k| all_text.contains(k));
    let (category, model, confidence) =
        if math { ("math", "deepseek-r1-math", 0.93) } else { ("other", "qwen3-8b", 0.61) };
    Decision {
        selected_model: model.into(),
        category: category.into(),
        confidence,
        scores: vec![CategoryScore { category: category.into(), score: confidence }],
        reason: Reason::Decision as i32,
        // A policy decision named after the category, so routes show x-vsr-selected-decision.
        decision: category.into(),
        ..Default::default()
    }
}

pub struct ClassifierDouble {
    pub addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    calls: Arc<AtomicU64>,
    last: Arc<Mutex<Option<ClassifyRequest>>>,
    stores: Arc<Mutex<Vec<StoreRequest>>>,
    tasks: Mutex<JoinSet<()>>,
}

impl ClassifierDouble {
    /// Starts on an ephemeral loopback port.
    pub async fn start(behaviour: Behaviour) -> Arc<Self> {
        Self::start_on("127.0.0.1:0".parse().unwrap(), behaviour).await
    }

    pub async fn start_on(addr: SocketAddr, behaviour: Behaviour) -> Arc<Self> {
        let listener = TcpListener::bind(addr).await.expect("bind classifier double");
        let double = Arc::new(Self {
            addr: listener.local_addr().unwrap(),
            behaviour: Arc::new(Mutex::new(behaviour)),
            calls: Arc::default(),
            last: Arc::default(),
            stores: Arc::default(),
            tasks: Mutex::new(JoinSet::new()),
        });
        let accept_state = double.clone();
        double.tasks.lock().unwrap().spawn(async move { accept_state.accept(listener).await });
        double
    }

    async fn accept(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let state = Recorded { behaviour: self.behaviour.clone(), calls: self.calls.clone(), last: self.last.clone(), stores: self.stores.clone() };
            let service = service_fn(move |req| respond(req, state.clone()));
            let connection = async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            };
            self.tasks.lock().unwrap().spawn(connection);
        }
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn last_request(&self) -> Option<ClassifyRequest> {
        self.last.lock().unwrap().clone()
    }

    /// SemanticCache.Store calls received so far.
    pub fn stores(&self) -> Vec<StoreRequest> {
        self.stores.lock().unwrap().clone()
    }

    /// Closes the listener and every open connection, as a crashed sidecar would.
    pub fn stop(&self) {
        self.tasks.lock().unwrap().abort_all();
    }
}

impl Drop for ClassifierDouble {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Clone)]
struct Recorded {
    behaviour: Arc<Mutex<Behaviour>>,
    calls: Arc<AtomicU64>,
    last: Arc<Mutex<Option<ClassifyRequest>>>,
    stores: Arc<Mutex<Vec<StoreRequest>>>,
}

fn framed(message: &[u8]) -> Response<GrpcBody> {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    Response::builder()
        .header("content-type", "application/grpc")
        .body(GrpcBody { data: Some(framed.freeze()), trailers: Some(trailers) })
        .unwrap()
}

async fn respond(req: Request<Incoming>, state: Recorded) -> Result<Response<GrpcBody>, hyper::Error> {
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await?.to_bytes();
    if path == "/semantic_router.v1.SemanticCache/Store" {
        let Some(store) = body.get(5..).and_then(|b| StoreRequest::decode(b).ok()) else {
            return Ok(trailers_only(3, "bad store frame"));
        };
        state.stores.lock().unwrap().push(store);
        return Ok(framed(&StoreReply { stored: true }.encode_to_vec()));
    }
    if path != "/semantic_router.v1.Classifier/Classify" {
        return Ok(trailers_only(12, "unimplemented"));
    }
    state.calls.fetch_add(1, Ordering::SeqCst);
    let request = if body.len() >= 5 { ClassifyRequest::decode(&body[5..]).ok() } else { None };
    let Some(request) = request else { return Ok(trailers_only(3, "bad request frame")) };
    *state.last.lock().unwrap() = Some(request.clone());

    let behaviour = state.behaviour.lock().unwrap().clone();
    let message = match behaviour {
        Behaviour::Decide => ClassifyResponse { decision: Some(keyword_decision(&request)) }.encode_to_vec(),
        Behaviour::Fixed(d) => ClassifyResponse { decision: Some(d) }.encode_to_vec(),
        Behaviour::Stall(delay) => {
            tokio::time::sleep(delay).await;
            ClassifyResponse { decision: Some(keyword_decision(&request)) }.encode_to_vec()
        }
        // Field 1 with the varint wire type: not decodable as ClassifyResponse.
        Behaviour::Garbage => vec![0x08, 0x96, 0x01, 0xff, 0xff],
        Behaviour::Status(code) => return Ok(trailers_only(code, "injected failure")),
    };
    Ok(framed(&message))
}

fn trailers_only(code: u32, message: &str) -> Response<GrpcBody> {
    Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", code.to_string())
        .header("grpc-message", message)
        .body(GrpcBody { data: None, trailers: None })
        .unwrap()
}

/// One data frame, then trailers.
pub struct GrpcBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(trailers) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}
