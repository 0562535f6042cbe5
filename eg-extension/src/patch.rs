//! The one change this extension makes: in every HTTP connection manager of a listener, the
//! Wasm HTTP filters whose plugin `root_id` is one of ours get
//! `config.allow_on_headers_stop_iteration = true`.
//!
//! The semantic router's filter returns `StopIteration` from `on_http_request_headers` until it
//! has buffered and classified the body; without the flag Envoy turns that into
//! `StopAllIterationAndWatermark` and the body never reaches the filter. Envoy Gateway's Wasm
//! API (`EnvoyExtensionPolicy`) has no field for it, so it is set here, on the listener Envoy
//! Gateway generated.
//!
//! The listener is edited as encoded bytes ([`crate::wire`]): only the path down to the flag is
//! parsed, and every other byte, including fields this build does not know, is copied.
//!
//! Path (field numbers from Envoy's API):
//! `Listener.filter_chains` (3) / `Listener.default_filter_chain` (25)
//! → `FilterChain.filters` (3) → `Filter.typed_config` (4, an `Any` of `HttpConnectionManager`)
//! → `HttpConnectionManager.http_filters` (5) → `HttpFilter.typed_config` (4, an `Any` of
//! `envoy.extensions.filters.http.wasm.v3.Wasm`) → `Wasm.config` (1, `PluginConfig`)
//! → `PluginConfig.root_id` (2) and `PluginConfig.allow_on_headers_stop_iteration` (9, a
//! `google.protobuf.BoolValue`).

use crate::wire::{self, put_len_field, WireError, LEN};

pub const HCM_TYPE: &str = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
pub const WASM_TYPE: &str = "envoy.extensions.filters.http.wasm.v3.Wasm";
/// The root id of the semantic router's filter (`rootID` of the EnvoyExtensionPolicy).
pub const DEFAULT_ROOT_ID: &str = "semantic_router";

mod field {
    pub const LISTENER_FILTER_CHAINS: u32 = 3;
    pub const LISTENER_DEFAULT_FILTER_CHAIN: u32 = 25;
    pub const FILTER_CHAIN_FILTERS: u32 = 3;
    pub const FILTER_TYPED_CONFIG: u32 = 4;
    pub const ANY_TYPE_URL: u32 = 1;
    pub const ANY_VALUE: u32 = 2;
    pub const HCM_HTTP_FILTERS: u32 = 5;
    pub const HTTP_FILTER_NAME: u32 = 1;
    pub const HTTP_FILTER_TYPED_CONFIG: u32 = 4;
    pub const HTTP_FILTER_CONFIG_DISCOVERY: u32 = 5;
    pub const WASM_CONFIG: u32 = 1;
    pub const PLUGIN_ROOT_ID: u32 = 2;
    pub const PLUGIN_ALLOW_ON_HEADERS_STOP_ITERATION: u32 = 9;
    pub const BOOL_VALUE_VALUE: u32 = 1;
}

/// Which Wasm filters to change.
#[derive(Debug, Clone)]
pub struct Options {
    /// Plugin root ids (`PluginConfig.root_id`) of the filters that need the flag.
    pub root_ids: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options { root_ids: vec![DEFAULT_ROOT_ID.to_string()] }
    }
}

/// What a call found, by HTTP filter name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Filters that got the flag.
    pub patched: Vec<String>,
    /// Filters of ours that already had it (left byte for byte as they were).
    pub already_set: Vec<String>,
    /// HTTP filters configured through ECDS (`config_discovery`), which cannot be edited here.
    pub discovered: Vec<String>,
}

impl Report {
    fn merge(&mut self, other: Report) {
        self.patched.extend(other.patched);
        self.already_set.extend(other.already_set);
        self.discovered.extend(other.discovered);
    }
}

/// Sets the flag on our Wasm filters in an encoded `envoy.config.listener.v3.Listener`.
/// Returns the new encoding, or `None` when nothing needed to change (the input is then the
/// right answer, unchanged). Idempotent: a patched listener yields `None`.
pub fn patch_listener(listener: &[u8], opts: &Options) -> Result<(Option<Vec<u8>>, Report), WireError> {
    let mut report = Report::default();
    let out = wire::edit_len_fields(
        listener,
        &[field::LISTENER_FILTER_CHAINS, field::LISTENER_DEFAULT_FILTER_CHAIN],
        |_, chain| patch_filter_chain(chain, opts, &mut report),
    )?;
    Ok((out, report))
}

fn patch_filter_chain(chain: &[u8], opts: &Options, report: &mut Report) -> Result<Option<Vec<u8>>, WireError> {
    wire::edit_len_fields(chain, &[field::FILTER_CHAIN_FILTERS], |_, filter| {
        // A network filter: only the HTTP connection manager carries HTTP filters.
        wire::edit_len_fields(filter, &[field::FILTER_TYPED_CONFIG], |_, any| {
            edit_any_of(any, HCM_TYPE, |hcm| patch_hcm(hcm, opts, report))
        })
    })
}

fn patch_hcm(hcm: &[u8], opts: &Options, report: &mut Report) -> Result<Option<Vec<u8>>, WireError> {
    wire::edit_len_fields(hcm, &[field::HCM_HTTP_FILTERS], |_, http_filter| {
        let name = last_string(http_filter, field::HTTP_FILTER_NAME)?.unwrap_or_default();
        if has_field(http_filter, field::HTTP_FILTER_CONFIG_DISCOVERY)? {
            report.discovered.push(name.clone());
        }
        let mut found = Report::default();
        let out = wire::edit_len_fields(http_filter, &[field::HTTP_FILTER_TYPED_CONFIG], |_, any| {
            edit_any_of(any, WASM_TYPE, |wasm| {
                wire::edit_len_fields(wasm, &[field::WASM_CONFIG], |_, plugin| patch_plugin_config(plugin, opts, &name, &mut found))
            })
        })?;
        report.merge(found);
        Ok(out)
    })
}

/// `PluginConfig`: if its root id is ours and the flag is not already true, drop every
/// occurrence of field 9 and append `allow_on_headers_stop_iteration { value: true }`.
fn patch_plugin_config(plugin: &[u8], opts: &Options, name: &str, report: &mut Report) -> Result<Option<Vec<u8>>, WireError> {
    let root_id = last_string(plugin, field::PLUGIN_ROOT_ID)?.unwrap_or_default();
    if !opts.root_ids.contains(&root_id) {
        return Ok(None);
    }
    let fields = wire::fields(plugin)?;
    // Occurrences of an embedded message merge; the last `value` wins.
    let mut allowed = false;
    for f in fields.iter().filter(|f| f.number == field::PLUGIN_ALLOW_ON_HEADERS_STOP_ITERATION && f.wire_type == LEN) {
        for v in wire::fields(f.payload)? {
            if v.number == field::BOOL_VALUE_VALUE && v.wire_type == 0 {
                allowed = v.payload.iter().any(|b| b & 0x7f != 0);
            }
        }
    }
    if allowed {
        report.already_set.push(name.to_string());
        return Ok(None);
    }
    let mut out = Vec::with_capacity(plugin.len() + 4);
    for f in fields.iter().filter(|f| f.number != field::PLUGIN_ALLOW_ON_HEADERS_STOP_ITERATION) {
        out.extend_from_slice(f.raw);
    }
    // BoolValue { value: true }
    put_len_field(&mut out, field::PLUGIN_ALLOW_ON_HEADERS_STOP_ITERATION, &[(field::BOOL_VALUE_VALUE << 3) as u8, 1]);
    report.patched.push(name.to_string());
    Ok(Some(out))
}

/// Edits the `value` of a `google.protobuf.Any` whose type is `type_name`.
fn edit_any_of(
    any: &[u8],
    type_name: &str,
    edit: impl FnOnce(&[u8]) -> Result<Option<Vec<u8>>, WireError>,
) -> Result<Option<Vec<u8>>, WireError> {
    let type_url = last_string(any, field::ANY_TYPE_URL)?.unwrap_or_default();
    // The type name is what follows the last '/' (usually type.googleapis.com/<name>).
    if type_url.rsplit('/').next() != Some(type_name) {
        return Ok(None);
    }
    let values = wire::fields(any)?.iter().filter(|f| f.number == field::ANY_VALUE && f.wire_type == LEN).count();
    let mut edit = Some(edit);
    let mut seen = 0;
    // `bytes` is a scalar: only its last occurrence counts.
    wire::edit_len_fields(any, &[field::ANY_VALUE], |_, value| {
        seen += 1;
        if seen == values {
            (edit.take().expect("one last occurrence"))(value)
        } else {
            Ok(None)
        }
    })
}

fn has_field(buf: &[u8], number: u32) -> Result<bool, WireError> {
    Ok(wire::fields(buf)?.iter().any(|f| f.number == number))
}

/// The last occurrence of a string field (proto3 scalars: the last one wins).
fn last_string(buf: &[u8], number: u32) -> Result<Option<String>, WireError> {
    Ok(wire::fields(buf)?
        .iter()
        .rfind(|f| f.number == number && f.wire_type == LEN)
        .map(|f| String::from_utf8_lossy(f.payload).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::ExtensionConfigSource;
    use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
    use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{http_filter, HttpConnectionManager, HttpFilter};
    use envoy_types::pb::envoy::extensions::wasm::v3::{plugin_config, PluginConfig, VmConfig};
    use envoy_types::pb::google::protobuf::{Any, BoolValue, StringValue};
    use prost::Message;

    fn any(type_name: &str, value: Vec<u8>) -> Any {
        Any { type_url: format!("type.googleapis.com/{type_name}"), value }
    }

    /// A Wasm filter as Envoy Gateway's translator builds it (internal/xds/translator/wasm.go):
    /// disabled on the HCM, enabled per route, config JSON in a StringValue, `fail_open` (which
    /// Envoy has deprecated in favour of `failure_policy`).
    #[allow(deprecated)]
    fn wasm_plugin(root_id: &str, allow: Option<bool>) -> PluginConfig {
        PluginConfig {
            name: "envoyextensionpolicy/semantic-router/semantic-router/wasm/0".into(),
            root_id: root_id.into(),
            configuration: Some(any("google.protobuf.StringValue", StringValue { value: r#"{"default_model":"m"}"#.into() }.encode_to_vec())),
            fail_open: true,
            vm: Some(plugin_config::Vm::VmConfig(VmConfig { vm_id: "vm".into(), runtime: "envoy.wasm.runtime.v8".into(), ..Default::default() })),
            allow_on_headers_stop_iteration: allow.map(|value| BoolValue { value }),
            ..Default::default()
        }
    }

    fn wasm_filter(name: &str, plugin: PluginConfig) -> HttpFilter {
        HttpFilter {
            name: name.into(),
            disabled: true,
            config_type: Some(http_filter::ConfigType::TypedConfig(any(WASM_TYPE, Wasm { config: Some(plugin) }.encode_to_vec()))),
            ..Default::default()
        }
    }

    fn plain_filter(name: &str, type_name: &str) -> HttpFilter {
        HttpFilter { name: name.into(), config_type: Some(http_filter::ConfigType::TypedConfig(any(type_name, vec![]))), ..Default::default() }
    }

    const OURS: &str = "envoy.filters.http.wasm/envoyextensionpolicy/semantic-router/semantic-router/wasm/0";
    const OTHER: &str = "envoy.filters.http.wasm/envoyextensionpolicy/other/other/wasm/0";

    fn hcm(http_filters: Vec<HttpFilter>) -> HttpConnectionManager {
        HttpConnectionManager { stat_prefix: "http-10080".into(), http_filters, ..Default::default() }
    }

    fn network_filter(name: &str, type_name: &str, value: Vec<u8>) -> Filter {
        Filter { name: name.into(), config_type: Some(filter::ConfigType::TypedConfig(any(type_name, value))) }
    }

    fn hcm_filter(h: &HttpConnectionManager) -> Filter {
        network_filter("envoy.filters.network.http_connection_manager", HCM_TYPE, h.encode_to_vec())
    }

    fn router_hcm(allow: Option<bool>) -> HttpConnectionManager {
        hcm(vec![
            plain_filter("envoy.filters.http.ext_authz", "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"),
            wasm_filter(OTHER, wasm_plugin("other_plugin", None)),
            wasm_filter(OURS, wasm_plugin(DEFAULT_ROOT_ID, allow)),
            plain_filter("envoy.filters.http.router", "envoy.extensions.filters.http.router.v3.Router"),
        ])
    }

    /// A listener with our filter in a filter chain and in the default chain, next to other
    /// HTTP filters, another Wasm filter and a non-HCM network filter.
    fn listener(allow: Option<bool>) -> Listener {
        Listener {
            name: "semantic-router/semantic-router/http".into(),
            filter_chains: vec![FilterChain {
                name: "chain-0".into(),
                filters: vec![
                    network_filter("envoy.filters.network.local_ratelimit", "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit", vec![0x0a, 0x01, b'x']),
                    hcm_filter(&router_hcm(allow)),
                ],
                ..Default::default()
            }],
            default_filter_chain: Some(FilterChain { name: "default".into(), filters: vec![hcm_filter(&router_hcm(allow))], ..Default::default() }),
            ..Default::default()
        }
    }

    /// The typed listener with the flag set on our filters only: what the patch must produce.
    fn expected(mut l: Listener) -> Listener {
        let fix = |chain: &mut FilterChain| {
            for f in &mut chain.filters {
                let Some(filter::ConfigType::TypedConfig(a)) = &mut f.config_type else { continue };
                if !a.type_url.ends_with(HCM_TYPE) {
                    continue;
                }
                let mut h = HttpConnectionManager::decode(a.value.as_slice()).unwrap();
                for hf in &mut h.http_filters {
                    let Some(http_filter::ConfigType::TypedConfig(wa)) = &mut hf.config_type else { continue };
                    if !wa.type_url.ends_with(WASM_TYPE) {
                        continue;
                    }
                    let mut w = Wasm::decode(wa.value.as_slice()).unwrap();
                    let c = w.config.as_mut().unwrap();
                    if c.root_id == DEFAULT_ROOT_ID {
                        c.allow_on_headers_stop_iteration = Some(BoolValue { value: true });
                    }
                    wa.value = w.encode_to_vec();
                }
                a.value = h.encode_to_vec();
            }
        };
        l.filter_chains.iter_mut().for_each(fix);
        l.default_filter_chain.iter_mut().for_each(fix);
        l
    }

    fn patch(bytes: &[u8]) -> (Option<Vec<u8>>, Report) {
        patch_listener(bytes, &Options::default()).unwrap()
    }

    #[test]
    fn sets_the_flag_on_our_wasm_filter_only() {
        let l = listener(None);
        let (out, report) = patch(&l.encode_to_vec());
        let out = Listener::decode(out.expect("changed").as_slice()).unwrap();
        assert_eq!(out, expected(l));
        assert_eq!(report.patched, [OURS, OURS], "one in the filter chain, one in the default chain");
        assert!(report.already_set.is_empty() && report.discovered.is_empty());
    }

    #[test]
    fn an_explicit_false_becomes_true() {
        let l = listener(Some(false));
        let (out, report) = patch(&l.encode_to_vec());
        assert_eq!(Listener::decode(out.unwrap().as_slice()).unwrap(), expected(l));
        assert_eq!(report.patched.len(), 2);
    }

    #[test]
    fn is_idempotent() {
        let (once, _) = patch(&listener(None).encode_to_vec());
        let once = once.unwrap();
        let (twice, report) = patch(&once);
        assert_eq!(twice, None, "a patched listener needs no change");
        assert_eq!(report.already_set, [OURS, OURS]);
        assert!(report.patched.is_empty());
        // Already true as generated: nothing to do either.
        assert_eq!(patch(&listener(Some(true)).encode_to_vec()).0, None);
    }

    #[test]
    fn a_listener_without_our_filter_is_unchanged() {
        let mut l = listener(None);
        let only_others = hcm(vec![
            wasm_filter(OTHER, wasm_plugin("other_plugin", None)),
            plain_filter("envoy.filters.http.router", "envoy.extensions.filters.http.router.v3.Router"),
        ]);
        l.filter_chains[0].filters[1] = hcm_filter(&only_others);
        l.default_filter_chain = None;
        let (out, report) = patch(&l.encode_to_vec());
        assert_eq!(out, None);
        assert_eq!(report, Report::default());
        // No filter chains at all (e.g. a TCP listener without HCM) and an empty listener.
        assert_eq!(patch(&Listener { name: "tcp".into(), ..Default::default() }.encode_to_vec()).0, None);
        assert_eq!(patch(&[]).0, None);
    }

    #[test]
    fn only_http_connection_managers_are_searched() {
        // A network filter of another type whose bytes happen to be an HCM with our filter.
        let l = Listener {
            filter_chains: vec![FilterChain {
                filters: vec![network_filter("not-an-hcm", "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", router_hcm(None).encode_to_vec())],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(patch(&l.encode_to_vec()).0, None);
        // Likewise an HTTP filter of another type carrying a Wasm-shaped config.
        let h = hcm(vec![HttpFilter {
            name: "lookalike".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any("envoy.extensions.filters.http.lua.v3.Lua", Wasm { config: Some(wasm_plugin(DEFAULT_ROOT_ID, None)) }.encode_to_vec()))),
            ..Default::default()
        }]);
        let l = Listener { filter_chains: vec![FilterChain { filters: vec![hcm_filter(&h)], ..Default::default() }], ..Default::default() };
        assert_eq!(patch(&l.encode_to_vec()).0, None);
    }

    #[test]
    fn root_ids_are_configurable() {
        let bytes = listener(None).encode_to_vec();
        let opts = Options { root_ids: vec!["other_plugin".into()] };
        let (out, report) = patch_listener(&bytes, &opts).unwrap();
        assert_eq!(report.patched, [OTHER, OTHER]);
        let out = Listener::decode(out.unwrap().as_slice()).unwrap();
        let Some(filter::ConfigType::TypedConfig(a)) = &out.filter_chains[0].filters[1].config_type else { panic!() };
        let h = HttpConnectionManager::decode(a.value.as_slice()).unwrap();
        let plugin = |i: usize| {
            let Some(http_filter::ConfigType::TypedConfig(w)) = &h.http_filters[i].config_type else { panic!() };
            Wasm::decode(w.value.as_slice()).unwrap().config.unwrap()
        };
        assert_eq!(plugin(1).allow_on_headers_stop_iteration, Some(BoolValue { value: true }));
        assert_eq!(plugin(2).allow_on_headers_stop_iteration, None, "semantic_router is not in this list");
    }

    /// Appends an unknown field (number 9999, a string) to an encoding.
    fn with_unknown(mut bytes: Vec<u8>) -> Vec<u8> {
        put_len_field(&mut bytes, 9999, b"from a newer Envoy API");
        bytes
    }

    fn unknown_count(bytes: &[u8]) -> usize {
        wire::fields(bytes).unwrap().iter().filter(|f| f.number == 9999).count()
    }

    /// Fields this build does not know survive, at every level the patch rewrites.
    #[test]
    fn unknown_fields_are_kept() {
        let plugin = with_unknown(wasm_plugin(DEFAULT_ROOT_ID, None).encode_to_vec());
        let mut wasm = Vec::new();
        put_len_field(&mut wasm, 1, &plugin);
        let mut hf = HttpFilter { name: OURS.into(), ..Default::default() }.encode_to_vec();
        put_len_field(&mut hf, 4, &any(WASM_TYPE, wasm).encode_to_vec());
        let hf = with_unknown(hf);
        let mut hcm_bytes = hcm(vec![]).encode_to_vec();
        put_len_field(&mut hcm_bytes, 5, &hf);
        let hcm_bytes = with_unknown(hcm_bytes);
        let chain = with_unknown(FilterChain { filters: vec![network_filter("hcm", HCM_TYPE, hcm_bytes)], ..Default::default() }.encode_to_vec());
        let mut l = Listener { name: "l".into(), ..Default::default() }.encode_to_vec();
        put_len_field(&mut l, 3, &chain);
        let l = with_unknown(l);

        let (out, report) = patch(&l);
        assert_eq!(report.patched, [OURS]);
        let out = out.unwrap();
        assert_eq!(unknown_count(&out), 1, "listener");
        let chain = wire::fields(&out).unwrap().into_iter().find(|f| f.number == 3).unwrap().payload;
        assert_eq!(unknown_count(chain), 1, "filter chain");
        let decoded = FilterChain::decode(chain).unwrap();
        let Some(filter::ConfigType::TypedConfig(a)) = &decoded.filters[0].config_type else { panic!() };
        assert_eq!(unknown_count(&a.value), 1, "HCM");
        let hf = wire::fields(&a.value).unwrap().into_iter().find(|f| f.number == 5).unwrap().payload;
        assert_eq!(unknown_count(hf), 1, "HTTP filter");
        let Some(http_filter::ConfigType::TypedConfig(w)) = HttpFilter::decode(hf).unwrap().config_type else { panic!() };
        let plugin = wire::fields(&w.value).unwrap()[0].payload.to_vec();
        assert_eq!(unknown_count(&plugin), 1, "PluginConfig");
        assert_eq!(PluginConfig::decode(plugin.as_slice()).unwrap().allow_on_headers_stop_iteration, Some(BoolValue { value: true }));
    }

    #[test]
    fn filters_from_ecds_are_reported() {
        let h = hcm(vec![HttpFilter {
            name: "ecds-wasm".into(),
            config_type: Some(http_filter::ConfigType::ConfigDiscovery(ExtensionConfigSource::default())),
            ..Default::default()
        }]);
        let l = Listener { filter_chains: vec![FilterChain { filters: vec![hcm_filter(&h)], ..Default::default() }], ..Default::default() };
        let (out, report) = patch(&l.encode_to_vec());
        assert_eq!(out, None);
        assert_eq!(report.discovered, ["ecds-wasm"]);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let mut bytes = listener(None).encode_to_vec();
        bytes.truncate(bytes.len() - 3);
        assert!(patch_listener(&bytes, &Options::default()).is_err());
    }
}
