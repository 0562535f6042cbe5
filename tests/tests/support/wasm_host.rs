//! A small proxy-wasm (ABI 0.2.1) host on wasmtime that loads the built filter and records every
//! hostcall it makes, so tests can drive the real module through request lifecycles.
//!
//! Only the hostcalls the filter imports are implemented; any other import traps when called.

use anyhow::{anyhow, bail, Result};
use std::collections::HashMap;
use std::path::Path;
use wasmtime::{Caller, Engine, Extern, Instance, Linker, Memory, Module, Store, TypedFunc};

pub const STATUS_OK: i32 = 0;
pub const STATUS_NOT_FOUND: i32 = 1;
pub const STATUS_BAD_ARGUMENT: i32 = 2;

const BUFFER_HTTP_REQUEST_BODY: i32 = 0;
const BUFFER_HTTP_RESPONSE_BODY: i32 = 1;
const BUFFER_GRPC_RECEIVE: i32 = 5;
const BUFFER_VM_CONFIGURATION: i32 = 6;
const BUFFER_PLUGIN_CONFIGURATION: i32 = 7;
const MAP_REQUEST_HEADERS: i32 = 0;
const MAP_RESPONSE_HEADERS: i32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

#[derive(Debug, Clone)]
pub struct LocalResponse {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl LocalResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("local response body is JSON")
    }
}

#[derive(Debug, Clone)]
pub struct GrpcCall {
    pub token: u32,
    pub cluster: String,
    pub service: String,
    pub method: String,
    pub message: Vec<u8>,
    pub timeout_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Everything the module asked of the host.
#[derive(Debug, Default)]
pub struct HostState {
    pub plugin_config: Vec<u8>,
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    pub request_body: Vec<u8>,
    /// The response chunk being delivered (the filter never buffers responses).
    pub response_chunk: Vec<u8>,
    pub grpc_receive_buffer: Vec<u8>,
    /// Clusters for which `proxy_grpc_call` succeeds; others get BadArgument, as in Envoy.
    pub known_clusters: Vec<String>,
    pub grpc_calls: Vec<GrpcCall>,
    pub grpc_cancelled: Vec<u32>,
    pub local_responses: Vec<LocalResponse>,
    pub foreign_calls: Vec<String>,
    /// Number of `proxy_continue_stream` calls per stream type (0 = request).
    pub continued: HashMap<i32, u32>,
    pub metrics: Vec<(String, MetricKind)>,
    pub metric_values: HashMap<u32, i64>,
    pub histogram_samples: HashMap<u32, Vec<u64>>,
    pub logs: Vec<(i32, String)>,
    pub tick_period_ms: u32,
    pub now_nanos: u64,
    /// Envoy drops its handle on the request headers once `on_request_headers` continues; later
    /// accesses get BadArgument (which the SDK turns into a trap), as here.
    pub request_headers_released: bool,
    next_token: u32,
}

impl HostState {
    pub fn request_header(&self, name: &str) -> Option<&str> {
        self.request_headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn response_header(&self, name: &str) -> Option<&str> {
        self.response_headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Value of a metric by the name the module defined it with.
    pub fn metric(&self, name: &str) -> i64 {
        self.metrics
            .iter()
            .position(|(n, _)| n == name)
            .and_then(|id| self.metric_values.get(&(id as u32)).copied())
            .unwrap_or(0)
    }

    pub fn histogram(&self, name: &str) -> Vec<u64> {
        self.metrics
            .iter()
            .position(|(n, _)| n == name)
            .and_then(|id| self.histogram_samples.get(&(id as u32)).cloned())
            .unwrap_or_default()
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.logs.iter().any(|(_, m)| m.contains(needle))
    }

    fn released(&self, map: i32) -> bool {
        map == MAP_REQUEST_HEADERS && self.request_headers_released
    }

    fn headers_mut(&mut self, map: i32) -> Option<&mut Vec<(String, String)>> {
        match map {
            MAP_REQUEST_HEADERS => Some(&mut self.request_headers),
            MAP_RESPONSE_HEADERS => Some(&mut self.response_headers),
            _ => None,
        }
    }
}

pub struct ProxyWasmHost {
    store: Store<HostState>,
    instance: Instance,
    root_context: u32,
    next_context: u32,
}

/// Compiling the module is the slow part; share one engine + module across tests.
pub fn compile(path: &Path) -> Result<(Engine, Module)> {
    let engine = Engine::default();
    let module = Module::from_file(&engine, path)
        .map_err(|e| anyhow!("loading {} (build it with `just build-wasm`): {e}", path.display()))?;
    Ok((engine, module))
}

impl ProxyWasmHost {
    /// Instantiates the module and starts the plugin (vm start + configure). Fails if the plugin
    /// rejects its configuration, with the module's logs in the error.
    pub fn start(engine: &Engine, module: &Module, plugin_config: &str, known_clusters: &[&str]) -> Result<Self> {
        let state = HostState {
            plugin_config: plugin_config.as_bytes().to_vec(),
            known_clusters: known_clusters.iter().map(|s| s.to_string()).collect(),
            now_nanos: 1_700_000_000_000_000_000,
            next_token: 1,
            ..Default::default()
        };
        let mut store = Store::new(engine, state);
        let mut linker = Linker::new(engine);
        define_hostcalls(&mut linker)?;
        linker.define_unknown_imports_as_traps(module)?;
        let instance = linker.instantiate(&mut store, module)?;
        let mut host = Self { store, instance, root_context: 1, next_context: 2 };
        if let Ok(init) = host.instance.get_typed_func::<(), ()>(&mut host.store, "_initialize") {
            init.call(&mut host.store, ())?;
        }
        host.call::<(i32, i32), ()>("proxy_on_context_create", (1, 0))?;
        if host.call::<(i32, i32), i32>("proxy_on_vm_start", (1, 0))? == 0 {
            bail!("vm start failed: {:?}", host.state().logs);
        }
        let size = host.state().plugin_config.len() as i32;
        if host.call::<(i32, i32), i32>("proxy_on_configure", (1, size))? == 0 {
            bail!("plugin configuration rejected: {:?}", host.state().logs);
        }
        Ok(host)
    }

    pub fn state(&self) -> &HostState {
        self.store.data()
    }

    pub fn state_mut(&mut self) -> &mut HostState {
        self.store.data_mut()
    }

    fn call<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(&mut self, name: &str, params: P) -> Result<R> {
        let f: TypedFunc<P, R> = self
            .instance
            .get_typed_func(&mut self.store, name)
            .map_err(|e| anyhow!("module export {name}: {e}"))?;
        f.call(&mut self.store, params).map_err(|e| anyhow!("{name} trapped: {e:?}"))
    }

    /// Creates an HTTP stream context and returns its id.
    pub fn new_http_context(&mut self) -> Result<u32> {
        let id = self.next_context;
        self.next_context += 1;
        self.call::<(i32, i32), ()>("proxy_on_context_create", (id as i32, self.root_context as i32))?;
        Ok(id)
    }

    pub fn on_request_headers(&mut self, ctx: u32, headers: &[(&str, &str)], end_of_stream: bool) -> Result<Action> {
        // One request at a time: a new request starts with an empty body.
        self.state_mut().request_body.clear();
        self.state_mut().request_headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        self.state_mut().request_headers_released = false;
        let n = headers.len() as i32;
        let result = action(self.call::<(i32, i32, i32), i32>("proxy_on_request_headers", (ctx as i32, n, end_of_stream as i32))?)?;
        self.state_mut().request_headers_released = result == Action::Continue;
        Ok(result)
    }

    /// Appends a body chunk to the buffered body and calls on_request_body with the total size.
    pub fn on_request_body(&mut self, ctx: u32, chunk: &[u8], end_of_stream: bool) -> Result<Action> {
        self.state_mut().request_body.extend_from_slice(chunk);
        let size = self.state().request_body.len() as i32;
        action(self.call::<(i32, i32, i32), i32>("proxy_on_request_body", (ctx as i32, size, end_of_stream as i32))?)
    }

    pub fn on_response_headers(&mut self, ctx: u32, headers: &[(&str, &str)]) -> Result<Action> {
        self.state_mut().response_headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let n = headers.len() as i32;
        action(self.call::<(i32, i32, i32), i32>("proxy_on_response_headers", (ctx as i32, n, 0))?)
    }

    /// Delivers one response body chunk (streamed through, as Envoy does without buffering).
    /// Only `examples/filter_cost.rs` drives the response side; the wasm_module tests do not.
    #[allow(dead_code)]
    pub fn on_response_body(&mut self, ctx: u32, chunk: &[u8], end_of_stream: bool) -> Result<Action> {
        self.state_mut().response_chunk = chunk.to_vec();
        let size = chunk.len() as i32;
        action(self.call::<(i32, i32, i32), i32>("proxy_on_response_body", (ctx as i32, size, end_of_stream as i32))?)
    }

    /// Delivers a successful unary gRPC reply.
    pub fn grpc_reply(&mut self, ctx: u32, token: u32, message: &[u8]) -> Result<()> {
        self.state_mut().grpc_receive_buffer = message.to_vec();
        let size = message.len() as i32;
        self.call::<(i32, i32, i32), ()>("proxy_on_grpc_receive", (ctx as i32, token as i32, size))
    }

    /// Delivers a failed gRPC call (e.g. 4 = deadline exceeded, 14 = unavailable).
    pub fn grpc_close(&mut self, ctx: u32, token: u32, status: u32) -> Result<()> {
        self.call::<(i32, i32, i32), ()>("proxy_on_grpc_close", (ctx as i32, token as i32, status as i32))
    }

    pub fn tick(&mut self) -> Result<()> {
        let root = self.root_context as i32;
        self.call::<i32, ()>("proxy_on_tick", root)
    }

    pub fn done(&mut self, ctx: u32) -> Result<()> {
        self.call::<i32, i32>("proxy_on_done", ctx as i32)?;
        self.call::<i32, ()>("proxy_on_delete", ctx as i32)
    }
}

fn action(raw: i32) -> Result<Action> {
    match raw {
        0 => Ok(Action::Continue),
        1 => Ok(Action::Pause),
        other => bail!("unknown action {other}"),
    }
}

type Ctx<'a> = Caller<'a, HostState>;

fn memory(caller: &mut Ctx<'_>) -> Memory {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => m,
        _ => panic!("module exports no memory"),
    }
}

fn read(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> Vec<u8> {
    let mem = memory(caller);
    mem.data(&caller)[ptr as usize..(ptr as usize + len as usize)].to_vec()
}

fn read_str(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> String {
    String::from_utf8_lossy(&read(caller, ptr, len)).into_owned()
}

fn write_u32(caller: &mut Ctx<'_>, ptr: i32, value: u32) {
    let mem = memory(caller);
    mem.data_mut(caller)[ptr as usize..ptr as usize + 4].copy_from_slice(&value.to_le_bytes());
}

fn write_u64(caller: &mut Ctx<'_>, ptr: i32, value: u64) {
    let mem = memory(caller);
    mem.data_mut(caller)[ptr as usize..ptr as usize + 8].copy_from_slice(&value.to_le_bytes());
}

/// Copies `bytes` into module memory allocated by its `malloc`, and writes pointer and size.
fn return_bytes(caller: &mut Ctx<'_>, bytes: &[u8], ptr_out: i32, size_out: i32) -> wasmtime::Result<()> {
    let malloc = caller
        .get_export("malloc")
        .and_then(Extern::into_func)
        .ok_or_else(|| wasmtime::Error::msg("module exports no malloc"))?
        .typed::<i32, i32>(&caller)?;
    let ptr = malloc.call(&mut *caller, bytes.len() as i32)?;
    let mem = memory(caller);
    mem.data_mut(&mut *caller)[ptr as usize..ptr as usize + bytes.len()].copy_from_slice(bytes);
    write_u32(caller, ptr_out, ptr as u32);
    write_u32(caller, size_out, bytes.len() as u32);
    Ok(())
}

/// proxy-wasm map serialization: count, (key len, value len) pairs, then NUL-terminated data.
pub fn serialize_map(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

pub fn deserialize_map(bytes: &[u8]) -> Vec<(String, String)> {
    if bytes.len() < 4 {
        return Vec::new();
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
    let count = u32_at(0);
    let mut sizes = Vec::with_capacity(count);
    for i in 0..count {
        sizes.push((u32_at(4 + i * 8), u32_at(8 + i * 8)));
    }
    let mut at = 4 + count * 8;
    let mut pairs = Vec::with_capacity(count);
    for (k, v) in sizes {
        let key = String::from_utf8_lossy(&bytes[at..at + k]).into_owned();
        at += k + 1;
        let value = String::from_utf8_lossy(&bytes[at..at + v]).into_owned();
        at += v + 1;
        pairs.push((key, value));
    }
    pairs
}

fn define_hostcalls(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap("env", "proxy_log", |mut c: Ctx<'_>, level: i32, ptr: i32, len: i32| -> i32 {
        let message = read_str(&mut c, ptr, len);
        c.data_mut().logs.push((level, message));
        STATUS_OK
    })?;
    linker.func_wrap("env", "proxy_get_current_time_nanoseconds", |mut c: Ctx<'_>, out: i32| -> i32 {
        let now = c.data().now_nanos;
        write_u64(&mut c, out, now);
        STATUS_OK
    })?;
    linker.func_wrap("env", "proxy_set_tick_period_milliseconds", |mut c: Ctx<'_>, period: i32| -> i32 {
        c.data_mut().tick_period_ms = period as u32;
        STATUS_OK
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Ctx<'_>, kind: i32, start: i32, max: i32, ptr_out: i32, size_out: i32| -> wasmtime::Result<i32> {
            let buffer = match kind {
                BUFFER_HTTP_REQUEST_BODY => c.data().request_body.clone(),
                BUFFER_HTTP_RESPONSE_BODY => c.data().response_chunk.clone(),
                BUFFER_GRPC_RECEIVE => c.data().grpc_receive_buffer.clone(),
                BUFFER_PLUGIN_CONFIGURATION => c.data().plugin_config.clone(),
                BUFFER_VM_CONFIGURATION => Vec::new(),
                _ => return Ok(STATUS_NOT_FOUND),
            };
            let start = (start as u32 as usize).min(buffer.len());
            let end = start.saturating_add(max as u32 as usize).min(buffer.len());
            if start == end {
                return Ok(STATUS_NOT_FOUND);
            }
            return_bytes(&mut c, &buffer[start..end], ptr_out, size_out)?;
            Ok(STATUS_OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: Ctx<'_>, kind: i32, start: i32, size: i32, ptr: i32, len: i32| -> i32 {
            if kind != BUFFER_HTTP_REQUEST_BODY {
                return STATUS_BAD_ARGUMENT;
            }
            let data = read(&mut c, ptr, len);
            let body = &mut c.data_mut().request_body;
            let start = (start as u32 as usize).min(body.len());
            let end = start.saturating_add(size as u32 as usize).min(body.len());
            body.splice(start..end, data);
            STATUS_OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Ctx<'_>, map: i32, ptr_out: i32, size_out: i32| -> wasmtime::Result<i32> {
            if c.data().released(map) {
                return Ok(STATUS_BAD_ARGUMENT);
            }
            let Some(headers) = c.data_mut().headers_mut(map).cloned() else { return Ok(STATUS_NOT_FOUND) };
            return_bytes(&mut c, &serialize_map(&headers), ptr_out, size_out)?;
            Ok(STATUS_OK)
        },
    )?;
    linker.func_wrap("env", "proxy_set_header_map_pairs", |mut c: Ctx<'_>, map: i32, ptr: i32, len: i32| -> i32 {
        if c.data().released(map) {
            return STATUS_BAD_ARGUMENT;
        }
        let pairs = deserialize_map(&read(&mut c, ptr, len));
        match c.data_mut().headers_mut(map) {
            Some(h) => {
                *h = pairs;
                STATUS_OK
            }
            None => STATUS_NOT_FOUND,
        }
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Ctx<'_>, map: i32, kp: i32, kl: i32, ptr_out: i32, size_out: i32| -> wasmtime::Result<i32> {
            if c.data().released(map) {
                return Ok(STATUS_BAD_ARGUMENT);
            }
            let key = read_str(&mut c, kp, kl).to_lowercase();
            let value = c
                .data_mut()
                .headers_mut(map)
                .and_then(|h| h.iter().find(|(n, _)| *n == key).map(|(_, v)| v.clone()));
            match value {
                Some(v) => {
                    return_bytes(&mut c, v.as_bytes(), ptr_out, size_out)?;
                    Ok(STATUS_OK)
                }
                None => Ok(STATUS_NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: Ctx<'_>, map: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> i32 {
            if c.data().released(map) {
                return STATUS_BAD_ARGUMENT;
            }
            let key = read_str(&mut c, kp, kl).to_lowercase();
            let value = read_str(&mut c, vp, vl);
            match c.data_mut().headers_mut(map) {
                Some(h) => {
                    h.retain(|(n, _)| *n != key);
                    h.push((key, value));
                    STATUS_OK
                }
                None => STATUS_NOT_FOUND,
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: Ctx<'_>, map: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> i32 {
            if c.data().released(map) {
                return STATUS_BAD_ARGUMENT;
            }
            let key = read_str(&mut c, kp, kl).to_lowercase();
            let value = read_str(&mut c, vp, vl);
            match c.data_mut().headers_mut(map) {
                Some(h) => {
                    h.push((key, value));
                    STATUS_OK
                }
                None => STATUS_NOT_FOUND,
            }
        },
    )?;
    linker.func_wrap("env", "proxy_remove_header_map_value", |mut c: Ctx<'_>, map: i32, kp: i32, kl: i32| -> i32 {
        if c.data().released(map) {
            return STATUS_BAD_ARGUMENT;
        }
        let key = read_str(&mut c, kp, kl).to_lowercase();
        match c.data_mut().headers_mut(map) {
            Some(h) => {
                h.retain(|(n, _)| *n != key);
                STATUS_OK
            }
            None => STATUS_NOT_FOUND,
        }
    })?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Ctx<'_>, status: i32, _dp: i32, _dl: i32, bp: i32, bl: i32, hp: i32, hl: i32, _grpc: i32| -> i32 {
            let body = read(&mut c, bp, bl);
            let headers = deserialize_map(&read(&mut c, hp, hl));
            c.data_mut().local_responses.push(LocalResponse { status: status as u32, headers, body });
            STATUS_OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut c: Ctx<'_>,
         up: i32,
         ul: i32,
         sp: i32,
         sl: i32,
         mp: i32,
         ml: i32,
         _meta_p: i32,
         _meta_l: i32,
         msg_p: i32,
         msg_l: i32,
         timeout_ms: i32,
         token_out: i32|
         -> i32 {
            let cluster = read_str(&mut c, up, ul);
            if !c.data().known_clusters.contains(&cluster) {
                return STATUS_BAD_ARGUMENT;
            }
            let service = read_str(&mut c, sp, sl);
            let method = read_str(&mut c, mp, ml);
            let message = if msg_l > 0 { read(&mut c, msg_p, msg_l) } else { Vec::new() };
            let token = c.data().next_token;
            c.data_mut().next_token += 1;
            c.data_mut().grpc_calls.push(GrpcCall {
                token,
                cluster,
                service,
                method,
                message,
                timeout_ms: timeout_ms as u32,
            });
            write_u32(&mut c, token_out, token);
            STATUS_OK
        },
    )?;
    linker.func_wrap("env", "proxy_grpc_cancel", |mut c: Ctx<'_>, token: i32| -> i32 {
        c.data_mut().grpc_cancelled.push(token as u32);
        STATUS_OK
    })?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: Ctx<'_>, np: i32, nl: i32, _ap: i32, _al: i32, _rp: i32, _rl: i32| -> i32 {
            let name = read_str(&mut c, np, nl);
            let known = name == "clear_route_cache";
            c.data_mut().foreign_calls.push(name);
            if known {
                STATUS_OK
            } else {
                STATUS_NOT_FOUND
            }
        },
    )?;
    linker.func_wrap("env", "proxy_define_metric", |mut c: Ctx<'_>, kind: i32, np: i32, nl: i32, id_out: i32| -> i32 {
        let name = read_str(&mut c, np, nl);
        let kind = match kind {
            0 => MetricKind::Counter,
            1 => MetricKind::Gauge,
            _ => MetricKind::Histogram,
        };
        let id = match c.data().metrics.iter().position(|(n, _)| *n == name) {
            Some(id) => id,
            None => {
                c.data_mut().metrics.push((name, kind));
                c.data().metrics.len() - 1
            }
        };
        write_u32(&mut c, id_out, id as u32);
        STATUS_OK
    })?;
    linker.func_wrap("env", "proxy_increment_metric", |mut c: Ctx<'_>, id: i32, offset: i64| -> i32 {
        *c.data_mut().metric_values.entry(id as u32).or_default() += offset;
        STATUS_OK
    })?;
    linker.func_wrap("env", "proxy_record_metric", |mut c: Ctx<'_>, id: i32, value: i64| -> i32 {
        c.data_mut().histogram_samples.entry(id as u32).or_default().push(value as u64);
        STATUS_OK
    })?;
    linker.func_wrap("env", "proxy_continue_stream", |mut c: Ctx<'_>, stream: i32| -> i32 {
        *c.data_mut().continued.entry(stream).or_default() += 1;
        STATUS_OK
    })?;
    linker.func_wrap("env", "proxy_set_effective_context", |_c: Ctx<'_>, _ctx: i32| -> i32 { STATUS_OK })?;
    linker.func_wrap("env", "proxy_get_property", |_c: Ctx<'_>, _p: i32, _l: i32, _rp: i32, _rl: i32| -> i32 {
        STATUS_NOT_FOUND
    })?;
    linker.func_wrap("env", "proxy_done", |_c: Ctx<'_>| -> i32 { STATUS_OK })?;
    Ok(())
}
