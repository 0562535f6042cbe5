//! Every host call the filter logic makes, behind one trait: the wasm build implements it with
//! proxy-wasm hostcalls, and native tests with a recording double.

use crate::metrics::Counter;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

pub trait Host {
    fn request_header(&self, name: &str) -> Option<String>;
    fn request_headers(&self) -> Vec<(String, String)>;
    /// Sets (replacing) a request header.
    fn set_request_header(&mut self, name: &str, value: &str);
    fn remove_request_header(&mut self, name: &str);
    fn add_response_header(&mut self, name: &str, value: &str);
    /// Every response header, in one host call.
    fn response_headers(&self) -> Vec<(String, String)>;
    /// The current response body chunk (the filter never holds the response).
    fn response_body(&self, size: usize) -> Option<Vec<u8>>;
    /// The buffered request body, `size` bytes from the start.
    fn request_body(&self, size: usize) -> Option<Vec<u8>>;
    fn replace_request_body(&mut self, body: &[u8]);
    fn send_local_response(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]);
    /// Starts the unary Classify call with gRPC `metadata`; returns its token.
    fn dispatch_classify(
        &mut self,
        cluster: &str,
        message: &[u8],
        metadata: &[(&str, String)],
        timeout: Duration,
    ) -> Result<u32, String>;
    fn grpc_response_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Fire-and-forget SemanticCache.Store, owned by the plugin rather than the request so it
    /// outlives the stream.
    fn dispatch_store(&mut self, cluster: &str, message: &[u8]) -> Result<(), String>;
    /// Makes Envoy pick the route again after the routing headers changed.
    fn clear_route_cache(&mut self) -> Result<(), String>;
    fn resume_request(&mut self);
    fn now_nanos(&self) -> u64;
    fn log(&self, level: LogLevel, message: &str);
    fn count(&self, counter: Counter);
    fn record_callout_latency(&self, micros: u64);
    /// Adds a response's token usage to the per-model counters.
    fn record_usage(&self, model: &str, prompt_tokens: u64, completion_tokens: u64);
    /// Records a streamed answer's TTFT and TPOT per selected model and decision.
    fn record_token_times(&self, model: &str, decision: &str, times: crate::latency::TokenTimes);
}
