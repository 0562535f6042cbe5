//! proxy-wasm glue: Envoy callbacks → [`RequestFilter`], [`Host`] → hostcalls.
//! No decisions are made here.

use crate::config::FilterConfig;
use crate::filter::{Flow, RequestFilter};
use crate::host::{Host, LogLevel};
use crate::metrics::{Counter, CALLOUT_LATENCY_HISTOGRAM};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType, Status};
use router_proto::v1::{CACHE_SERVICE, CLASSIFIER_SERVICE, CLASSIFY_METHOD, STORE_METHOD};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(RouterRoot { context_id, config: None })
    });
}}

thread_local! {
    static COUNTERS: RefCell<HashMap<Counter, u32>> = RefCell::new(HashMap::new());
    static LATENCY_HISTOGRAM: Cell<Option<u32>> = const { Cell::new(None) };
    /// Per-model token counters (prompt, completion), defined on first use.
    static TOKEN_COUNTERS: RefCell<HashMap<String, (u32, u32)>> = RefCell::new(HashMap::new());
    /// TTFT and TPOT histogram ids per "model\ndecision".
    static TOKEN_HISTOGRAMS: RefCell<HashMap<String, (u32, u32)>> = RefCell::new(HashMap::new());
    /// Whether the classifier cluster exists. The SDK aborts the VM when `proxy_grpc_call`
    /// answers BadArgument (Envoy's answer for an unknown cluster), so requests only dispatch
    /// once a probe has seen the cluster; until then they fall back.
    static CLUSTER_KNOWN: Cell<bool> = const { Cell::new(false) };
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_grpc_call(
        upstream_data: *const u8,
        upstream_size: usize,
        service_name_data: *const u8,
        service_name_size: usize,
        method_name_data: *const u8,
        method_name_size: usize,
        initial_metadata_data: *const u8,
        initial_metadata_size: usize,
        message_data: *const u8,
        message_size: usize,
        timeout_milliseconds: u32,
        return_callout_id: *mut u32,
    ) -> Status;
    fn proxy_grpc_cancel(token_id: u32) -> Status;
}

/// Checks that `cluster` exists with a cancelled health-check call the SDK never sees.
fn probe_cluster(cluster: &str) -> bool {
    match untracked_grpc_call(cluster, "grpc.health.v1.Health", "Check", &[], 1000) {
        Ok(token) => {
            // SAFETY: plain hostcall on a token we own.
            unsafe { proxy_grpc_cancel(token) };
            true
        }
        Err(_) => false,
    }
}

/// A unary gRPC call the SDK does not track (its reply, if any, is ignored); returns its token.
fn untracked_grpc_call(cluster: &str, service: &str, method: &str, message: &[u8], timeout_ms: u32) -> Result<u32, Status> {
    let mut token = 0u32;
    // SAFETY: every pointer/length pair describes a live slice for the duration of the call.
    let status = unsafe {
        proxy_grpc_call(
            cluster.as_ptr(),
            cluster.len(),
            service.as_ptr(),
            service.len(),
            method.as_ptr(),
            method.len(),
            std::ptr::null(),
            0,
            message.as_ptr(),
            message.len(),
            timeout_ms,
            &mut token,
        )
    };
    if status == Status::Ok {
        Ok(token)
    } else {
        Err(status)
    }
}

struct RouterRoot {
    context_id: u32,
    config: Option<Rc<FilterConfig>>,
}

impl Context for RouterRoot {}

impl RootContext for RouterRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(e) => {
                log(LogLevel::Error, &format!("semantic-router: cannot read plugin configuration: {e:?}"));
                return false;
            }
        };
        let config = match FilterConfig::parse(&raw) {
            Ok(c) => c,
            Err(e) => {
                log(LogLevel::Error, &format!("semantic-router: {e}"));
                return false;
            }
        };
        define_metrics();
        let known = probe_cluster(&config.classifier_cluster);
        CLUSTER_KNOWN.with(|k| k.set(known));
        if known {
            log(LogLevel::Info, &format!(
                "semantic-router: ready (classifier cluster {:?}, timeout {} ms, default model {:?}, fail mode {:?})",
                config.classifier_cluster, config.timeout_ms, config.default_model, config.fail_mode
            ));
        } else {
            log(LogLevel::Error, &format!(
                "semantic-router: classifier cluster {:?} is not defined in Envoy; auto-routed requests fall back until it is (re-checked every 5 s)",
                config.classifier_cluster
            ));
            let _ = hostcalls::set_tick_period(Duration::from_secs(5));
        }
        self.config = Some(Rc::new(config));
        true
    }

    fn on_tick(&mut self) {
        if let Some(config) = &self.config {
            if probe_cluster(&config.classifier_cluster) {
                CLUSTER_KNOWN.with(|k| k.set(true));
                log(LogLevel::Info, &format!("semantic-router: classifier cluster {:?} is now defined", config.classifier_cluster));
                let _ = hostcalls::set_tick_period(Duration::ZERO);
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        let host = WasmHost { context_id, root_context_id: self.context_id };
        Some(Box::new(RouterHttp { filter: RequestFilter::new(config), host }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct RouterHttp {
    filter: RequestFilter,
    host: WasmHost,
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl Context for RouterHttp {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        self.filter.on_classify_response(&mut self.host, token_id, status_code, response_size);
    }
}

impl HttpContext for RouterHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(self.filter.on_request_headers(&mut self.host, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.filter.on_request_body(&mut self.host, body_size, end_of_stream))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        action(self.filter.on_response_headers(&mut self.host))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.filter.on_response_body(&mut self.host, body_size, end_of_stream))
    }
}

fn define_metrics() {
    COUNTERS.with(|counters| {
        let mut counters = counters.borrow_mut();
        for counter in Counter::all() {
            if let Ok(id) = hostcalls::define_metric(MetricType::Counter, &counter.name()) {
                counters.insert(counter, id);
            }
        }
    });
    if let Ok(id) = hostcalls::define_metric(MetricType::Histogram, CALLOUT_LATENCY_HISTOGRAM) {
        LATENCY_HISTOGRAM.with(|h| h.set(Some(id)));
    }
}

fn log(level: LogLevel, message: &str) {
    let level = match level {
        LogLevel::Debug => proxy_wasm::types::LogLevel::Debug,
        LogLevel::Info => proxy_wasm::types::LogLevel::Info,
        LogLevel::Warn => proxy_wasm::types::LogLevel::Warn,
        LogLevel::Error => proxy_wasm::types::LogLevel::Error,
    };
    let _ = hostcalls::log(level, message);
}

/// The [`Host`] of a request running inside Envoy.
struct WasmHost {
    context_id: u32,
    root_context_id: u32,
}

impl Host for WasmHost {
    fn request_header(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpRequestHeaders, name).ok().flatten()
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default()
    }

    fn set_request_header(&mut self, name: &str, value: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
    }

    fn remove_request_header(&mut self, name: &str) {
        let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
    }

    fn add_response_header(&mut self, name: &str, value: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value));
    }

    fn response_headers(&self) -> Vec<(String, String)> {
        hostcalls::get_map(MapType::HttpResponseHeaders).unwrap_or_default()
    }

    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size).ok().flatten()
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size).ok().flatten()
    }

    fn replace_request_body(&mut self, body: &[u8]) {
        let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, usize::MAX, body);
    }

    fn send_local_response(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        if let Err(e) = hostcalls::send_http_response(status, headers.to_vec(), Some(body)) {
            log(LogLevel::Error, &format!("semantic-router: send_http_response failed: {e:?}"));
        }
    }

    fn dispatch_classify(
        &mut self,
        cluster: &str,
        message: &[u8],
        metadata: &[(&str, String)],
        timeout: Duration,
    ) -> Result<u32, String> {
        if !CLUSTER_KNOWN.with(Cell::get) {
            return Err(format!("cluster {cluster:?} is not defined"));
        }
        let metadata: Vec<(&str, &[u8])> = metadata.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        hostcalls::dispatch_grpc_call(cluster, CLASSIFIER_SERVICE, CLASSIFY_METHOD, metadata, Some(message), timeout)
            .map_err(|s| format!("{s:?}"))
    }

    fn dispatch_store(&mut self, cluster: &str, message: &[u8]) -> Result<(), String> {
        if !CLUSTER_KNOWN.with(Cell::get) {
            return Err(format!("cluster {cluster:?} is not defined"));
        }
        // Issued on behalf of the root context, so the call is not cancelled when this stream
        // ends a moment later.
        let _ = hostcalls::set_effective_context(self.root_context_id);
        let sent = untracked_grpc_call(cluster, CACHE_SERVICE, STORE_METHOD, message, 1000);
        let _ = hostcalls::set_effective_context(self.context_id);
        sent.map(|_| ()).map_err(|status| format!("{status:?}"))
    }

    fn grpc_response_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size).ok().flatten()
    }

    fn clear_route_cache(&mut self) -> Result<(), String> {
        hostcalls::call_foreign_function("clear_route_cache", None).map(|_| ()).map_err(|s| format!("{s:?}"))
    }

    fn resume_request(&mut self) {
        let _ = hostcalls::resume_http_request();
    }

    fn now_nanos(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64)
    }

    fn log(&self, level: LogLevel, message: &str) {
        log(level, message);
    }

    fn count(&self, counter: Counter) {
        if let Some(id) = COUNTERS.with(|c| c.borrow().get(&counter).copied()) {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    fn record_usage(&self, model: &str, prompt_tokens: u64, completion_tokens: u64) {
        let ids = TOKEN_COUNTERS.with(|t| {
            let mut t = t.borrow_mut();
            if let Some(ids) = t.get(model) {
                return Some(*ids);
            }
            let name = crate::metrics::stat_segment(model);
            let prompt = hostcalls::define_metric(MetricType::Counter, &format!("{}.prompt.{name}", crate::metrics::TOKENS_PREFIX)).ok()?;
            let completion =
                hostcalls::define_metric(MetricType::Counter, &format!("{}.completion.{name}", crate::metrics::TOKENS_PREFIX)).ok()?;
            t.insert(model.to_string(), (prompt, completion));
            Some((prompt, completion))
        });
        if let Some((prompt, completion)) = ids {
            let _ = hostcalls::increment_metric(prompt, prompt_tokens as i64);
            let _ = hostcalls::increment_metric(completion, completion_tokens as i64);
        }
    }

    fn record_token_times(&self, model: &str, decision: &str, times: crate::latency::TokenTimes) {
        let key = format!("{model}\n{decision}");
        let ids = TOKEN_HISTOGRAMS.with(|t| {
            let mut t = t.borrow_mut();
            if let Some(ids) = t.get(&key) {
                return Some(*ids);
            }
            let suffix = format!("{}.{}", crate::metrics::stat_segment(model), crate::metrics::stat_segment(decision));
            let ttft = hostcalls::define_metric(MetricType::Histogram, &format!("{}.{suffix}", crate::metrics::TTFT_PREFIX)).ok()?;
            let tpot = hostcalls::define_metric(MetricType::Histogram, &format!("{}.{suffix}", crate::metrics::TPOT_PREFIX)).ok()?;
            t.insert(key, (ttft, tpot));
            Some((ttft, tpot))
        });
        if let Some((ttft, tpot)) = ids {
            let _ = hostcalls::record_metric(ttft, times.ttft_us);
            if let Some(us) = times.tpot_us {
                let _ = hostcalls::record_metric(tpot, us);
            }
        }
    }

    fn record_callout_latency(&self, micros: u64) {
        if let Some(id) = LATENCY_HISTOGRAM.with(Cell::get) {
            let _ = hostcalls::record_metric(id, micros);
        }
    }
}
