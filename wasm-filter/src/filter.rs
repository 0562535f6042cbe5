//! The per-request state machine: strip spoofed headers, buffer, parse, classify, apply.

use crate::body_mutations::{self, ReasoningOutcome};
use crate::config::{FailMode, FilterConfig, RouteMode};
use crate::host::{Host, LogLevel};
use crate::json_edit;
use crate::metrics::{Counter, FallbackReason};
use crate::openai::{self, ApiError, Endpoint, PromptRequest};
use crate::plugins;
use router_proto::vocabulary::{self, suffix};
use prost::Message;
use crate::sse;
use crate::latency::TokenClock;
use crate::usage::UsageScanner;
use router_proto::v1::{ClassifyRequest, ClassifyResponse, Decision, RequestTraits, StoreRequest, Turn};
use std::rc::Rc;
use std::time::Duration;

/// What the glue tells Envoy after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop iteration (headers) or stop and buffer (body).
    Pause,
}

#[derive(Debug, Default)]
enum State {
    /// Not a request we route: pass everything through.
    #[default]
    Passthrough,
    /// Waiting for the whole body.
    Buffering { endpoint: Endpoint },
    /// The Classify callout is in flight.
    Classifying { token: u32, endpoint: Endpoint, body: Vec<u8>, started_nanos: u64, stream: bool },
    /// Decided (or answered locally); nothing left to do on the request path.
    Done,
}

pub struct RequestFilter {
    config: Rc<FilterConfig>,
    state: State,
    /// Decision headers, also copied onto the response.
    decision_headers: Vec<(String, String)>,
    /// The client asked to bypass the semantic cache.
    skip_cache: bool,
    /// Honoured `x-vsr-skip-processing` / `x-vsr-debug` (only when the config allows them).
    skip_processing: bool,
    debug: bool,
    /// Set when the sidecar wants this request's answer for the semantic cache.
    cache_store: Option<CacheCapture>,
    /// The model this request was sent to (for token-usage metrics).
    routed_model: Option<String>,
    /// The policy decision that routed it (`none` when none did), for the latency metrics.
    routed_decision: String,
    /// When the request reached the filter (host clock, nanoseconds).
    started_nanos: u64,
    /// TTFT/TPOT of a streamed answer.
    token_clock: Option<TokenClock>,
    usage: Option<UsageScanner>,
    /// Request headers the body phase needs, read at request headers.
    request: RequestHeaders,
    /// The request came with a `content-length` (header mode keeps it right after a rewrite).
    had_content_length: bool,
}

/// Request header values read in `on_request_headers`: in body mode Envoy drops its handle on
/// the request headers once that callback continues, and a later read fails (the SDK then
/// aborts the VM), so the body phase must not read them.
#[derive(Debug, Default)]
struct RequestHeaders {
    request_id: String,
    path: String,
    tenant: String,
    /// W3C trace context for the callout's metadata.
    trace: Vec<(&'static str, String)>,
}

/// Copy of a response on its way to the client, for the semantic cache.
struct CacheCapture {
    request_id: String,
    /// `None` until the response headers show a 200; then the bytes seen so far.
    body: Option<Vec<u8>>,
    sse: bool,
}

impl RequestFilter {
    pub fn new(config: Rc<FilterConfig>) -> Self {
        Self {
            config,
            state: State::Passthrough,
            decision_headers: Vec::new(),
            skip_cache: false,
            skip_processing: false,
            debug: false,
            cache_store: None,
            routed_model: None,
            routed_decision: String::new(),
            started_nanos: 0,
            token_clock: None,
            usage: None,
            request: RequestHeaders::default(),
            had_content_length: false,
        }
    }

    pub fn on_request_headers(&mut self, host: &mut impl Host, end_of_stream: bool) -> Flow {
        self.started_nanos = host.now_nanos();
        // Every header value this request needs comes from this one read: each host call is a
        // crossing out of the VM (and, for a value, a call back in to allocate its copy), which
        // cost more than the whole lookup.
        let mut headers = host.request_headers();
        let (skip_cache, skip_processing, debug) = (
            self.config.header(suffix::SKIP_CACHE),
            self.config.header(suffix::SKIP_PROCESSING),
            self.config.header(suffix::DEBUG),
        );
        // A client must never pick its own route by header; it may only opt out of the cache.
        headers.retain(|(name, value)| {
            let on = matches!(value.trim(), "true" | "1");
            if name.eq_ignore_ascii_case(&skip_cache) {
                self.skip_cache |= on;
            } else if name.eq_ignore_ascii_case(&skip_processing) {
                self.skip_processing |= on && self.config.allow_skip_processing;
            } else if name.eq_ignore_ascii_case(&debug) {
                self.debug |= on && self.config.allow_debug;
            }
            let reserved = self.config.is_reserved_header(name);
            if reserved {
                host.remove_request_header(name);
            }
            !reserved
        });
        let header = |wanted: &str| first_value(&headers, wanted);
        let method = header(":method").unwrap_or_default();
        let path = header(":path").unwrap_or_default().to_string();
        let endpoint = match Endpoint::from_path(&path) {
            Some(e) if method == "POST" && self.config.is_routed_path(&path) => e,
            _ => return Flow::Continue,
        };
        let content_length = header("content-length");
        self.had_content_length = content_length.is_some();
        if let Some(len) = content_length.and_then(|v| v.trim().parse::<usize>().ok()) {
            if len > self.config.max_body_bytes {
                return self.reject(host, ApiError::body_too_large(self.config.max_body_bytes));
            }
        }
        if end_of_stream {
            return self.reject(host, ApiError::invalid_request("the request body is empty", None));
        }
        self.request = RequestHeaders {
            request_id: header("x-request-id").unwrap_or_default().to_string(),
            tenant: header(&self.config.tenant_header).unwrap_or_default().to_string(),
            trace: trace_context(header),
            path,
        };
        self.state = State::Buffering { endpoint };
        if self.config.route_mode == RouteMode::Body {
            // The headers leave now, before the body is rewritten: a content-length would be
            // stale (Envoy forwards the header as is and sends the rewritten body, so the backend
            // reads too few or too many bytes). Without it Envoy frames the upstream body itself
            // (chunked on HTTP/1.1, DATA frames on HTTP/2).
            host.remove_request_header("content-length");
            return Flow::Continue;
        }
        Flow::Pause
    }

    pub fn on_request_body(&mut self, host: &mut impl Host, body_size: usize, end_of_stream: bool) -> Flow {
        let endpoint = match self.state {
            State::Buffering { endpoint } => endpoint,
            State::Passthrough => return Flow::Continue,
            // A late body chunk while classifying or after a local reply: keep holding it.
            _ => return Flow::Pause,
        };
        if body_size > self.config.max_body_bytes {
            return self.reject(host, ApiError::body_too_large(self.config.max_body_bytes));
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        let body = host.request_body(body_size).unwrap_or_default();
        let request = match openai::parse_request(endpoint, &body, self.config.context_turns) {
            Ok(r) => r,
            Err(e) => return self.reject(host, e),
        };

        if !self.config.is_auto_model(&request.model) {
            host.count(Counter::Explicit);
            self.set_route(host, &request.model);
            return Flow::Continue;
        }
        if request.text.trim().is_empty() && request.context.is_empty() {
            return self.fall_back(host, body, FallbackReason::NoPrompt);
        }
        if self.skip_processing {
            let model = self.config.default_model.clone();
            self.decision_headers = vec![
                (self.config.selected_model_header.clone(), header_value(&model)),
                (self.config.header(suffix::SELECTED_MODEL), header_value(&model)),
                (self.config.header(suffix::SKIPPED), "true".into()),
            ];
            self.replace_body(host, &with_model(&body, &model));
            self.apply_headers(host);
            return Flow::Continue;
        }

        let message = self.classify_request(&request).encode_to_vec();
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let metadata = self.request.trace.clone();
        match host.dispatch_classify(&self.config.classifier_cluster, &message, &metadata, timeout) {
            Ok(token) => {
                let stream = request.stream;
                self.state = State::Classifying { token, endpoint, body, started_nanos: host.now_nanos(), stream };
                Flow::Pause
            }
            Err(e) => {
                host.log(LogLevel::Warn, &format!("classifier callout to {:?} failed to start: {e}", self.config.classifier_cluster));
                self.fall_back(host, body, FallbackReason::DispatchFailed)
            }
        }
    }

    /// The Classify reply (or its failure). Always resumes or answers the request.
    pub fn on_classify_response(&mut self, host: &mut impl Host, token: u32, grpc_status: u32, size: usize) {
        let (endpoint, body, started, stream) = match std::mem::take(&mut self.state) {
            State::Classifying { token: t, endpoint, body, started_nanos, stream } if t == token => {
                (endpoint, body, started_nanos, stream)
            }
            other => {
                self.state = other;
                return;
            }
        };
        let elapsed_micros = host.now_nanos().saturating_sub(started) / 1_000;
        host.record_callout_latency(elapsed_micros);
        let flow = if grpc_status != 0 {
            host.log(LogLevel::Warn, &format!("classifier callout failed with gRPC status {grpc_status} after {elapsed_micros} µs"));
            // Envoy reports an expired deadline as UNAVAILABLE, so the clock decides.
            let reason = if elapsed_micros >= self.config.timeout_ms * 950 {
                FallbackReason::Timeout
            } else {
                FallbackReason::from_grpc_status(grpc_status)
            };
            self.fall_back(host, body, reason)
        } else {
            let decoded = host
                .grpc_response_body(size)
                .and_then(|bytes| ClassifyResponse::decode(bytes.as_slice()).ok())
                .and_then(|r| r.decision);
            match decoded {
                None => self.fall_back(host, body, FallbackReason::BadReply),
                Some(decision) => self.apply_decision(host, endpoint, body, decision, stream),
            }
        };
        if flow == Flow::Continue {
            host.resume_request();
        }
    }

    pub fn on_response_headers(&mut self, host: &mut impl Host) -> Flow {
        if self.config.response_headers {
            for (name, value) in &self.decision_headers {
                host.add_response_header(name, value);
            }
        }
        // One read of the whole map instead of one per header (see `on_request_headers`).
        let headers = host.response_headers();
        let ok = first_value(&headers, ":status") == Some("200");
        let sse = first_value(&headers, "content-type").is_some_and(|t| t.contains("text/event-stream"));
        if let Some(capture) = &mut self.cache_store {
            // Only successful answers are stored; errors and partial streams never are.
            if ok {
                capture.sse = sse;
                capture.body = Some(Vec::new());
            } else {
                self.cache_store = None;
            }
        }
        if ok && self.routed_model.is_some() {
            self.usage = Some(UsageScanner::new(sse));
            if sse {
                self.token_clock = Some(TokenClock::new(self.started_nanos));
            }
        }
        Flow::Continue
    }

    /// Copies the response for the semantic cache without delaying it.
    pub fn on_response_body(&mut self, host: &mut impl Host, chunk_size: usize, end_of_stream: bool) -> Flow {
        let capturing = self.cache_store.as_ref().is_some_and(|c| c.body.is_some());
        if !capturing && self.usage.is_none() {
            return Flow::Continue;
        }
        let chunk = if chunk_size > 0 { host.response_body(chunk_size).unwrap_or_default() } else { Vec::new() };
        if let (Some(clock), false) = (&mut self.token_clock, chunk.is_empty()) {
            clock.chunk(host.now_nanos());
        }
        if let Some(scanner) = &mut self.usage {
            scanner.push(&chunk);
            if end_of_stream {
                let found = self.usage.take().and_then(UsageScanner::finish);
                let times = self.token_clock.take().and_then(|c| c.finish(found.as_ref().map(|u| u.completion_tokens)));
                if let Some(model) = &self.routed_model {
                    if let Some(u) = found {
                        host.record_usage(model, u.prompt_tokens, u.completion_tokens);
                    }
                    if let Some(t) = times {
                        host.record_token_times(model, &self.routed_decision, t);
                    }
                }
            }
        }
        let Some(capture) = &mut self.cache_store else { return Flow::Continue };
        let Some(body) = &mut capture.body else { return Flow::Continue };
        body.extend_from_slice(&chunk);
        if body.len() > self.config.cache_max_body_bytes {
            self.cache_store = None;
            return Flow::Continue;
        }
        if end_of_stream {
            let capture = self.cache_store.take().expect("checked above");
            let body = capture.body.unwrap_or_default();
            let completion = if capture.sse { sse::assemble_completion(&body) } else { Some(body) };
            if let Some(completion) = completion {
                let message = StoreRequest { request_id: capture.request_id, body: completion }.encode_to_vec();
                match host.dispatch_store(&self.config.classifier_cluster, &message) {
                    Ok(()) => host.count(Counter::CacheStore),
                    Err(e) => host.log(LogLevel::Warn, &format!("semantic cache store not sent: {e}")),
                }
            }
        }
        Flow::Continue
    }

    fn classify_request(&self, request: &PromptRequest) -> ClassifyRequest {
        let limit = self.config.max_classify_bytes;
        ClassifyRequest {
            text: prefix(&request.text, limit).to_string(),
            context: request
                .context
                .iter()
                .map(|(role, content)| Turn { role: role.clone(), content: prefix(content, limit).to_string() })
                .collect(),
            conversation_bytes: (request.text.len() + request.context.iter().map(|(_, c)| c.len()).sum::<usize>()) as u64,
            requested_model: request.model.clone(),
            request_id: self.request.request_id.clone(),
            path: self.request.path.clone(),
            tenant: self.request.tenant.clone(),
            traits: Some(RequestTraits {
                stream: request.stream,
                has_tools: request.has_tools,
                temperature: request.temperature.map(|t| t as f32),
                cache_salt: request.cache_salt.clone(),
                skip_cache: self.skip_cache,
            }),
        }
    }

    fn apply_decision(
        &mut self,
        host: &mut impl Host,
        endpoint: Endpoint,
        body: Vec<u8>,
        decision: Decision,
        stream: bool,
    ) -> Flow {
        if let Some(reply) = decision.local_reply.as_ref().filter(|_| endpoint == Endpoint::ChatCompletions) {
            // The decision's fast_response plugin: answered here, the backend never sees it;
            // it wins over a cache hit (the operator's answer for this decision is fixed).
            host.count(Counter::FastResponse);
            self.decision_headers = self.decision_header_values(&decision, &decision.selected_model);
            self.state = State::Done;
            let created = host.now_nanos() / 1_000_000_000;
            let (content_type, answer) =
                plugins::fast_response(&self.request.request_id, created, &decision.selected_model, &reply.message, stream);
            let mut headers: Vec<(&str, &str)> = vec![("content-type", content_type)];
            headers.extend(self.decision_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            host.send_local_response(200, &headers, &answer);
            return Flow::Pause;
        }
        if let Some(hit) = &decision.cache_hit {
            let answer = if stream { sse::completion_to_sse(&hit.body) } else { Some(hit.body.clone()) };
            if let Some(answer) = answer {
                host.count(Counter::CacheHit);
                self.decision_headers = self.decision_header_values(&decision, &decision.selected_model);
                self.decision_headers.push((self.config.header(suffix::CACHE_HIT), "true".into()));
                self.state = State::Done;
                let content_type = if stream { "text/event-stream" } else { "application/json" };
                let mut headers: Vec<(&str, &str)> = vec![("content-type", content_type)];
                headers.extend(self.decision_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
                host.send_local_response(200, &headers, &answer);
                return Flow::Pause;
            }
            host.log(LogLevel::Warn, "semantic cache hit is not a chat.completion; ignored");
        }
        if let Some(block) = &decision.block {
            host.count(Counter::Blocked);
            self.decision_headers = self.decision_header_values(&decision, &decision.selected_model);
            let error = ApiError {
                status: if (400..600).contains(&block.status) { block.status } else { 400 },
                message: block.message.clone(),
                kind: error_type(&block.r#type),
                code: (!block.code.is_empty()).then(|| block.code.clone()),
                param: None,
            };
            return self.respond_locally(host, &error);
        }
        if decision.cache_store {
            self.cache_store = Some(CacheCapture {
                request_id: self.request.request_id.clone(),
                body: None,
                sse: false,
            });
        }
        if decision.selected_model.trim().is_empty() {
            return self.fall_back(host, body, FallbackReason::EmptyDecision);
        }
        host.count(Counter::Routed);
        self.decision_headers = self.decision_header_values(&decision, &decision.selected_model);
        let mut body = with_model(&body, &decision.selected_model);
        if endpoint == Endpoint::ChatCompletions {
            if let Some(reasoning) = &decision.reasoning {
                let (edited, outcome) = body_mutations::apply_reasoning(&body, reasoning);
                body = edited;
                let value = match outcome {
                    ReasoningOutcome::Applied if reasoning.enabled => Some("on"),
                    ReasoningOutcome::Applied => Some("off"),
                    ReasoningOutcome::KeptClientValue => Some("client"),
                    ReasoningOutcome::NotApplicable => None,
                };
                if let Some(value) = value {
                    self.decision_headers.push((self.config.header(suffix::SELECTED_REASONING), value.into()));
                }
            }
            if let Some(prompt) = decision.system_prompt.as_ref().filter(|p| !p.text.is_empty()) {
                if let Some(edited) = body_mutations::apply_system_prompt(&body, prompt) {
                    body = edited;
                    self.decision_headers.push((self.config.header(suffix::INJECTED_SYSTEM_PROMPT), "true".into()));
                }
            }
        }
        if let Some(params) = &decision.request_params {
            if let Some(edited) = plugins::apply_request_params(&body, params) {
                body = edited;
            }
        }
        self.replace_body(host, &body);
        // The decision's header_mutation plugin; in body route mode the request headers are
        // already upstream, so there is nothing left to change.
        if let (Some(m), RouteMode::Header) = (&decision.header_mutation, self.config.route_mode) {
            let prefix = self.config.header_prefix.clone();
            for edit in plugins::header_edits(m, |n| host.request_header(n), &self.config.selected_model_header, &prefix) {
                match edit {
                    plugins::HeaderEdit::Set(n, v) => host.set_request_header(&n, &v),
                    plugins::HeaderEdit::Remove(n) => host.remove_request_header(&n),
                }
            }
        }
        self.apply_headers(host);
        Flow::Continue
    }

    fn decision_header_values(&self, decision: &Decision, model: &str) -> Vec<(String, String)> {
        let c = &self.config;
        // Every decision header comes from the typed decision through the shared vocabulary;
        // the sidecar sends no header names of its own.
        let mut headers = vec![(c.selected_model_header.clone(), header_value(model))];
        headers.extend(
            vocabulary::decision_headers(decision, model, &c.header_prefix)
                .into_iter()
                .map(|(n, v)| (n, header_value(&v))),
        );
        if self.debug {
            let scores: Vec<String> =
                decision.scores.iter().take(5).map(|s| format!("{}={:.3}", s.category, s.score)).collect();
            headers.push((c.header(suffix::DEBUG_SCORES), header_value(&scores.join(","))));
            headers.push((c.header(suffix::DEBUG_PROCESSING_US), decision.processing_micros.to_string()));
            if let Some(j) = &decision.jailbreak {
                headers.push((c.header(suffix::DEBUG_JAILBREAK), format!("{}={:.3}", header_value(&j.label), j.confidence)));
            }
        }
        headers
    }

    fn fall_back(&mut self, host: &mut impl Host, body: Vec<u8>, reason: FallbackReason) -> Flow {
        if self.config.fail_mode == FailMode::Closed && reason != FallbackReason::NoPrompt {
            host.count(Counter::FailedClosed);
            return self.respond_locally(host, &ApiError::router_unavailable(reason.as_str()));
        }
        host.count(Counter::Fallback(reason));
        let model = self.config.default_model.clone();
        self.decision_headers = vec![
            (self.config.selected_model_header.clone(), header_value(&model)),
            (self.config.header(suffix::SELECTED_MODEL), header_value(&model)),
            (self.config.header(suffix::FALLBACK), reason.as_str().to_string()),
        ];
        self.replace_body(host, &with_model(&body, &model));
        self.apply_headers(host);
        Flow::Continue
    }

    fn set_route(&mut self, host: &mut impl Host, model: &str) {
        self.decision_headers = vec![(self.config.selected_model_header.clone(), header_value(model))];
        self.apply_headers(host);
    }

    fn replace_body(&self, host: &mut impl Host, body: &[u8]) {
        host.replace_request_body(body);
        // In body mode the headers (without content-length) are already upstream.
        if self.config.route_mode == RouteMode::Header && self.had_content_length {
            host.set_request_header("content-length", &body.len().to_string());
        }
    }

    fn apply_headers(&mut self, host: &mut impl Host) {
        self.routed_model = self
            .decision_headers
            .iter()
            .find(|(n, _)| *n == self.config.selected_model_header)
            .map(|(_, v)| v.clone());
        let decision_header = self.config.header(suffix::SELECTED_DECISION);
        self.routed_decision =
            self.decision_headers.iter().find(|(n, _)| *n == decision_header).map_or_else(|| "none".into(), |(_, v)| v.clone());
        self.state = State::Done;
        if self.config.route_mode == RouteMode::Body {
            // The request headers already went upstream: the body's model is the route, and the
            // decision headers only go back to the client on the response.
            return;
        }
        for (name, value) in &self.decision_headers {
            host.set_request_header(name, value);
        }
        if let Err(e) = host.clear_route_cache() {
            host.log(LogLevel::Warn, &format!("clear_route_cache failed: {e}"));
        }
    }

    fn reject(&mut self, host: &mut impl Host, error: ApiError) -> Flow {
        host.count(Counter::Rejected);
        self.respond_locally(host, &error)
    }

    fn respond_locally(&mut self, host: &mut impl Host, error: &ApiError) -> Flow {
        self.state = State::Done;
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        if self.config.response_headers {
            headers.extend(self.decision_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        }
        host.send_local_response(error.status, &headers, &error.to_json());
        Flow::Pause
    }
}

/// The first value of header `name` (case-insensitive), as Envoy answers a single-header read.
fn first_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The longest prefix of `text` within `max` bytes, cut on a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `body` with its top-level `model` set to `model` (validated bodies always have one).
fn with_model(body: &[u8], model: &str) -> Vec<u8> {
    match json_edit::top_level_value_span(body, "model") {
        Some(span) => json_edit::splice(body, span, &json_edit::json_string(model)),
        None => body.to_vec(),
    }
}

/// OpenAI error `type` of a block: a small fixed vocabulary; an unknown type is reported as a
/// policy error, an empty one as a bad request.
fn error_type(kind: &str) -> &'static str {
    match kind {
        "" | "invalid_request_error" => "invalid_request_error",
        "content_policy_violation" => "content_policy_violation",
        "rate_limit_error" => "rate_limit_error",
        "service_unavailable" => "service_unavailable",
        _ => "content_policy_violation",
    }
}

/// Header values must not carry control characters (no header injection via category names).
fn header_value(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).take(256).collect()
}

#[cfg(test)]
mod tests;

/// The request's W3C trace context (`traceparent`, and `tracestate` with it), for the callout's
/// metadata so the sidecar's spans join the client's trace. Only a well-formed `traceparent` is
/// passed on: the headers come from the client.
fn trace_context<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Vec<(&'static str, String)> {
    let Some(parent) = header("traceparent").filter(|p| valid_traceparent(p)) else {
        return Vec::new();
    };
    let mut metadata = vec![("traceparent", parent.to_string())];
    if let Some(state) = header("tracestate") {
        let printable = state.bytes().all(|b| (0x20..0x7f).contains(&b));
        if printable && state.len() <= MAX_TRACESTATE_BYTES {
            metadata.push(("tracestate", state.to_string()));
        }
    }
    metadata
}

/// W3C Trace Context caps `tracestate` at 32 members; 512 bytes is what propagators keep.
const MAX_TRACESTATE_BYTES: usize = 512;

/// `version-traceid-parentid-flags`: lower-case hex of 2, 32, 16 and 2 digits, ids not all zero,
/// version `ff` invalid.
fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && nonzero(parts[1])
        && hex(parts[2], 16)
        && nonzero(parts[2])
        && hex(parts[3], 2)
}
