//! A simulated OpenAI-compatible backend: chat and text completions (JSON and SSE), `/v1/models`.
//! It echoes the model it received, so routing is observable, and counts what reached it.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What one backend saw: request count and the last request.
#[derive(Default)]
pub struct SimState {
    pub name: String,
    pub requests: AtomicU64,
    pub last: Mutex<Option<SeenRequest>>,
}

#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

impl SimState {
    pub fn count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn last(&self) -> Option<SeenRequest> {
        self.last.lock().unwrap().clone()
    }
}

/// Serves the simulator on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<SimState>) {
    let (_never, stop) = watch::channel(false);
    serve_until(listener, state, stop).await
}

/// Serves until `stop` turns true, then drops the listener and every open connection, as a
/// crashed backend would.
async fn serve_until(listener: TcpListener, state: Arc<SimState>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let (state, mut stop) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, state.clone()));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
}

/// Binds `addr` and serves in a background task; returns the bound address and the state.
pub async fn spawn(addr: SocketAddr, name: &str) -> std::io::Result<(SocketAddr, Arc<SimState>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let state = Arc::new(SimState { name: name.into(), ..Default::default() });
    tokio::spawn(serve(listener, state.clone()));
    Ok((local, state))
}

/// A simulator that can be killed (listener and connections closed at once) to test restarts.
pub struct KillableSim {
    pub addr: SocketAddr,
    pub state: Arc<SimState>,
    stop: watch::Sender<bool>,
}

impl KillableSim {
    pub async fn start(addr: SocketAddr, name: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(SimState { name: name.into(), ..Default::default() });
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve_until(listener, state.clone(), stopped));
        Ok(Self { addr, state, stop })
    }

    /// Closes the listener and every connection without answering what is in flight.
    pub fn kill(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for KillableSim {
    fn drop(&mut self) {
        self.kill();
    }
}

type Resp = Response<Full<Bytes>>;

async fn handle(req: Request<Incoming>, state: Arc<SimState>) -> Result<Resp, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path().to_string();
    if path.starts_with("/v1/") {
        state.requests.fetch_add(1, Ordering::SeqCst);
        *state.last.lock().unwrap() = Some(SeenRequest {
            path: path.clone(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            body: body.clone(),
        });
    }
    Ok(match (parts.method, path.as_str()) {
        (Method::GET, "/v1/models") => json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": [{"id": state.name, "object": "model", "owned_by": "simulator"}]}),
            &state,
        ),
        (Method::POST, "/v1/chat/completions") => completion(&body, &state, true),
        (Method::POST, "/v1/completions") => completion(&body, &state, false),
        (Method::GET, "/health") => json_response(StatusCode::OK, &json!({"status": "ok"}), &state),
        _ => error(StatusCode::NOT_FOUND, &format!("no route for {path}"), &state),
    })
}

fn completion(body: &[u8], state: &SimState, chat: bool) -> Resp {
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}"), state),
    };
    let model = request["model"].as_str().unwrap_or("unknown").to_string();
    let prompt = if chat {
        request["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .map(|m| match &m["content"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    } else {
        request["prompt"].as_str().unwrap_or_default().to_string()
    };
    let short: String = prompt.chars().take(80).collect();
    let answer = format!("[{}] {} answered: {}", state.name, model, short);
    let prompt_tokens = prompt.split_whitespace().count().max(1);
    let completion_tokens = answer.split_whitespace().count();
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let id = format!("chatcmpl-sim-{}", state.count());

    if request["stream"].as_bool().unwrap_or(false) {
        let mut sse = String::new();
        let words: Vec<&str> = answer.split_inclusive(' ').collect();
        for (i, word) in words.iter().enumerate() {
            let delta = if i == 0 { json!({"role": "assistant", "content": word}) } else { json!({"content": word}) };
            let chunk = json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": null}]
            });
            sse.push_str(&format!("data: {chunk}\n\n"));
        }
        let last = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]
        });
        sse.push_str(&format!("data: {last}\n\ndata: [DONE]\n\n"));
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/event-stream")
            .header("x-backend-name", &state.name)
            .body(Full::new(Bytes::from(sse)))
            .unwrap();
    }

    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                       "total_tokens": prompt_tokens + completion_tokens});
    let body = if chat {
        json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": usage
        })
    } else {
        json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": answer, "finish_reason": "stop"}],
            "usage": usage
        })
    };
    json_response(StatusCode::OK, &body, state)
}

fn error(status: StatusCode, message: &str, state: &SimState) -> Resp {
    json_response(status, &json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}}), state)
}

fn json_response(status: StatusCode, body: &Value, state: &SimState) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-backend-name", &state.name)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}
