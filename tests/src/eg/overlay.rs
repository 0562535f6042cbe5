//! The standalone overlay: deploy/'s own objects, rendered for Envoy Gateway's standalone mode
//! (File provider, Host infrastructure). Every change is listed in `deploy/standalone/README.md`;
//! everything else is read unchanged from deploy/, so the manifests stay the one source.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::envoy::repo_root;

/// The kinds Envoy Gateway itself reads. The rest of a build (RBAC, the classifier ConfigMap,
/// the extension server's Deployment, Service and NetworkPolicy, ReferenceGrants) is
/// Kubernetes-only: the sidecar and the extension server run as processes beside it, and the
/// overlay's `Backend`s live in the route's namespace.
pub const STANDALONE_KINDS: &[&str] = &[
    "Namespace",
    "GatewayClass",
    "EnvoyProxy",
    "Gateway",
    "HTTPRoute",
    "ClientTrafficPolicy",
    "BackendTrafficPolicy",
    "EnvoyExtensionPolicy",
];

/// The Wasm source switch shared with the Kind profile (type HTTP, url, sha256 placeholder).
pub const WASM_HTTP_PATCH: &str = "overlays/e2e-kind/wasm-code-http.yaml";

/// The bootstrap cluster the filter calls (deploy/base/envoyproxy.yaml).
pub const CLASSIFIER_CLUSTER: &str = "semantic_router_classifier";

/// The cluster Envoy Gateway generates for its Wasm cache (HTTPS on port 18002).
pub const WASM_CLUSTER: &str = "wasm_cluster";
/// Envoy Gateway's Wasm cache server port (fixed in v1.9).
pub const WASM_CACHE_PORT: u16 = 18002;

#[derive(Debug, Clone)]
pub struct Params {
    /// The Gateway listener's port (80 in deploy/).
    pub gateway_port: u16,
    /// Port of the classifier sidecar on loopback (50051 in deploy/).
    pub classifier_port: u16,
    /// One backend per HTTPRoute rule, in rule order (all `vllm-frontend` in deploy/).
    pub backends: Vec<SocketAddr>,
    pub wasm_url: String,
    pub wasm_sha256: String,
    /// Envoy's client certificate and the control plane's CA for Envoy Gateway's Wasm cache
    /// (`<configHome>/certs/envoy`, written by `envoy-gateway certgen --local`).
    pub envoy_certs: PathBuf,
    /// Envoy version func-e must find in the data home (the venv's Envoy).
    pub envoy_version: String,
    /// The kustomization under deploy/ to render (`base`, or an overlay of it).
    pub build: String,
    /// Keys replaced in the EnvoyExtensionPolicy's filter config: the test's backends may serve
    /// other models than deploy/'s (Dynamo's mockers serve the sidecar config's models, so the
    /// filter's `default_model` must be one of them for a fallback to be answered).
    pub filter_config: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone)]
pub struct GatewayParams {
    pub resources_dir: PathBuf,
    pub config_home: PathBuf,
    pub data_home: PathBuf,
    pub state_home: PathBuf,
    pub runtime_dir: PathBuf,
    /// Envoy Gateway's admin server (on 127.0.0.1).
    pub admin_port: u16,
    /// Helm values files under deploy/ merged in order (as `helm -f a -f b` does); their
    /// `config.envoyGateway` is Envoy Gateway's configuration.
    pub values: Vec<String>,
    /// The extension server, on loopback, for the values' `extensionManager` (required exactly
    /// when the values register one).
    pub extension: Option<SocketAddr>,
}

pub fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

/// Every YAML document of a file under deploy/, as JSON values.
pub fn load(rel: &str) -> Result<Vec<Value>> {
    let path = deploy_dir().join(rel);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).with_context(|| format!("parsing {}", path.display()))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn one(rel: &str) -> Result<Value> {
    let mut docs = load(rel)?;
    if docs.len() != 1 {
        bail!("{rel}: expected one object, found {}", docs.len());
    }
    Ok(docs.remove(0))
}

/// Applies a JSON-6902 patch (the `add`, `replace` and `remove` operations deploy/ uses).
pub fn apply_patch(target: &mut Value, ops: &Value) -> Result<()> {
    for op in ops.as_array().context("a patch is a list of operations")? {
        let path = op["path"].as_str().context("op without path")?;
        let kind = op["op"].as_str().context("op without op")?;
        let (parent_path, last) = path.rsplit_once('/').context("path must start with /")?;
        let last = last.replace("~1", "/").replace("~0", "~");
        let parent = if parent_path.is_empty() { Some(&mut *target) } else { target.pointer_mut(parent_path) };
        let parent = parent.with_context(|| format!("{path}: parent does not exist"))?;
        match (kind, parent) {
            ("add" | "replace", Value::Object(map)) => {
                if kind == "replace" && !map.contains_key(&last) {
                    bail!("{path}: replace of a missing key");
                }
                map.insert(last, op["value"].clone());
            }
            ("add", Value::Array(items)) if last == "-" => items.push(op["value"].clone()),
            ("add" | "replace", Value::Array(items)) => {
                let i: usize = last.parse().with_context(|| format!("{path}: bad index"))?;
                if kind == "add" && i <= items.len() {
                    items.insert(i, op["value"].clone());
                } else if i < items.len() {
                    items[i] = op["value"].clone();
                } else {
                    bail!("{path}: index out of range");
                }
            }
            ("remove", Value::Object(map)) => {
                map.remove(&last).with_context(|| format!("{path}: nothing to remove"))?;
            }
            ("remove", Value::Array(items)) => {
                let i: usize = last.parse().with_context(|| format!("{path}: bad index"))?;
                if i >= items.len() {
                    bail!("{path}: index out of range");
                }
                items.remove(i);
            }
            (other, _) => bail!("{path}: unsupported op {other:?} here"),
        }
    }
    Ok(())
}

fn patch_file(target: &mut Value, rel: &str) -> Result<()> {
    let ops = one(rel)?;
    apply_patch(target, &ops).with_context(|| format!("applying {rel}"))
}

/// The backend object the overlay puts behind HTTPRoute rule `i`.
pub fn backend_name(i: usize) -> String {
    format!("vllm-frontend-rule{i}")
}

/// `a/b/../c` → `a/c`.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The objects of a kustomization under deploy/: its resources (files, or directories with
/// their own kustomization) and its JSON-6902 `patches` with a `target` — the subset deploy/
/// uses (tests/tests/deploy_manifests.rs fails on anything else).
pub fn build(dir: &str) -> Result<Vec<Value>> {
    let k = one(&format!("{dir}/kustomization.yaml"))?;
    let mut out = Vec::new();
    for r in k["resources"].as_array().into_iter().flatten() {
        let rel = normalize(&format!("{dir}/{}", r.as_str().context("resource path")?));
        if deploy_dir().join(&rel).is_dir() {
            out.extend(build(&rel)?);
        } else {
            out.extend(load(&rel)?);
        }
    }
    for p in k["patches"].as_array().into_iter().flatten() {
        let rel = normalize(&format!("{dir}/{}", p["path"].as_str().context("patch path")?));
        let target = &p["target"];
        let mut hits = 0;
        for obj in out.iter_mut() {
            let kind_ok = target["kind"].is_null() || obj["kind"] == target["kind"];
            let name_ok = target["name"].is_null() || obj["metadata"]["name"] == target["name"];
            if kind_ok && name_ok {
                patch_file(obj, &rel)?;
                hits += 1;
            }
        }
        if hits == 0 {
            bail!("{dir}: patch {rel} matches no object");
        }
    }
    Ok(out)
}

/// A build of deploy/ for standalone mode.
pub fn resources(p: &Params) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut route_namespace = String::new();
    for mut obj in build(&p.build)? {
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        if !STANDALONE_KINDS.contains(&kind.as_str()) {
            continue;
        }
        match kind.as_str() {
            "EnvoyProxy" => envoy_proxy(&mut obj, p)?,
            "Gateway" => {
                for listener in obj["spec"]["listeners"].as_array_mut().context("Gateway listeners")? {
                    listener["port"] = json!(p.gateway_port);
                }
            }
            "HTTPRoute" => {
                route_namespace = obj["metadata"]["namespace"].as_str().context("HTTPRoute namespace")?.to_string();
                let rules = obj["spec"]["rules"].as_array_mut().context("HTTPRoute rules")?;
                if rules.len() != p.backends.len() {
                    bail!("{}: {} HTTPRoute rules but {} backends", p.build, rules.len(), p.backends.len());
                }
                for (i, rule) in rules.iter_mut().enumerate() {
                    let port = p.backends[i].port();
                    rule["backendRefs"] = json!([{
                        "group": "gateway.envoyproxy.io", "kind": "Backend", "name": backend_name(i), "port": port,
                    }]);
                }
            }
            "EnvoyExtensionPolicy" => {
                patch_file(&mut obj, WASM_HTTP_PATCH)?;
                let code = &mut obj["spec"]["wasm"][0]["code"]["http"];
                code["url"] = json!(p.wasm_url);
                code["sha256"] = json!(p.wasm_sha256);
                for (k, v) in &p.filter_config {
                    obj["spec"]["wasm"][0]["config"][k] = v.clone();
                }
            }
            _ => {}
        }
        out.push(obj);
    }
    for (i, addr) in p.backends.iter().enumerate() {
        out.push(json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "Backend",
            "metadata": {"name": backend_name(i), "namespace": route_namespace},
            "spec": {"endpoints": [{"ip": {"address": addr.ip().to_string(), "port": addr.port()}}]},
        }));
    }
    Ok(out)
}

/// Helm's merge of values files: maps merge key by key, anything else is replaced.
fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// Host provider with the pinned Envoy version instead of the Kubernetes provider (whose
/// deployment patch adds the sidecar container); the bootstrap's classifier cluster on the
/// sidecar's loopback port; a static `wasm_cluster` that reaches Envoy Gateway's Wasm cache.
///
/// Why the last one: Envoy Gateway v1.9 generates `wasm_cluster` for Kubernetes only — a DNS
/// endpoint `envoy-gateway.<namespace>.svc.cluster.local:18002` and TLS that trusts
/// `/certs/ca.crt`, the CA's path inside its Envoy container. On a host Envoy rejects that
/// cluster ("Invalid path: /certs/ca.crt") and cannot fetch any module. A static cluster of the
/// same name, with the same TLS (client certificate, TLS 1.3) from the Host provider's
/// certificate directory, takes its place: Envoy keeps a static cluster when xDS sends one with
/// its name. Everything else about the module (fetch, sha256 check, cache, the filter's
/// `remote` source) stays Envoy Gateway's.
fn envoy_proxy(obj: &mut Value, p: &Params) -> Result<()> {
    let spec = obj["spec"].as_object_mut().context("EnvoyProxy spec")?;
    if spec.get("provider").and_then(|v| v["type"].as_str()) != Some("Kubernetes") {
        bail!("EnvoyProxy: expected the Kubernetes provider in deploy/");
    }
    spec.insert("provider".into(), json!({"type": "Host", "host": {"envoyVersion": p.envoy_version}}));
    let bootstrap = spec.get_mut("bootstrap").context("EnvoyProxy bootstrap")?;
    let text = bootstrap["value"].as_str().context("bootstrap value")?;
    let mut value: Value = serde_yaml::from_str(text).context("bootstrap value is YAML")?;
    let clusters = value["static_resources"]["clusters"].as_array_mut().context("bootstrap clusters")?;
    let cluster = clusters
        .iter_mut()
        .find(|c| c["name"] == CLASSIFIER_CLUSTER)
        .with_context(|| format!("bootstrap has no {CLASSIFIER_CLUSTER}"))?;
    let mut ports = 0;
    for endpoints in cluster["load_assignment"]["endpoints"].as_array_mut().context("endpoints")? {
        for lb in endpoints["lb_endpoints"].as_array_mut().context("lb_endpoints")? {
            lb["endpoint"]["address"]["socket_address"]["port_value"] = json!(p.classifier_port);
            ports += 1;
        }
    }
    if ports == 0 {
        bail!("{CLASSIFIER_CLUSTER} has no endpoint");
    }
    let file = |name: &str| json!({"filename": p.envoy_certs.join(name).display().to_string()});
    clusters.push(json!({
        "name": WASM_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }},
        "load_assignment": {"cluster_name": WASM_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
            {"socket_address": {"address": "127.0.0.1", "port_value": WASM_CACHE_PORT}}}}]}]},
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "tls_params": {"tls_maximum_protocol_version": "TLSv1_3"},
                "tls_certificates": [{"certificate_chain": file("tls.crt"), "private_key": file("tls.key")}],
                "validation_context": {"trusted_ca": file("ca.crt")},
            },
        }},
    }));
    bootstrap["value"] = json!(serde_yaml::to_string(&value)?);
    Ok(())
}

/// Envoy Gateway's configuration: `config.envoyGateway` of deploy/envoy-gateway's Helm values
/// with the File/Host provider, Backend resources enabled, the extension manager (if the values
/// register one) on the extension server on loopback, the admin server on loopback, the
/// Prometheus endpoint off, JSON logs.
pub fn envoy_gateway_config(g: &GatewayParams) -> Result<Value> {
    let mut values = Value::Null;
    for rel in &g.values {
        merge(&mut values, &one(rel)?);
    }
    let mut eg = values["config"]["envoyGateway"].clone();
    if !eg.is_object() {
        bail!("values.yaml has no config.envoyGateway");
    }
    eg["apiVersion"] = json!("gateway.envoyproxy.io/v1alpha1");
    eg["kind"] = json!("EnvoyGateway");
    let path = |p: &Path| json!(p.display().to_string());
    eg["provider"] = json!({
        "type": "Custom",
        "custom": {
            "resource": {"type": "File", "file": {"paths": [path(&g.resources_dir)]}},
            "infrastructure": {"type": "Host", "host": {
                "configHome": path(&g.config_home),
                "dataHome": path(&g.data_home),
                "stateHome": path(&g.state_home),
                "runtimeDir": path(&g.runtime_dir),
            }},
        },
    });
    eg["extensionApis"]["enableBackend"] = json!(true);
    match (g.extension, eg.get_mut("extensionManager")) {
        (Some(addr), Some(manager)) => {
            manager["service"] = json!({"fqdn": {"hostname": addr.ip().to_string(), "port": addr.port()}});
        }
        (None, None) => {}
        (Some(_), None) => bail!("{:?} register no extension manager for the extension server", g.values),
        (None, Some(_)) => bail!("{:?} register an extension manager but no extension server runs", g.values),
    }
    eg["admin"] = json!({"address": {"host": "127.0.0.1", "port": g.admin_port}});
    // One JSON object per line: statuses are logged as multi-line YAML in the message.
    eg["logging"]["encoder"] = json!("JSON");
    eg["telemetry"] = json!({"metrics": {"prometheus": {"disable": true}}});
    Ok(eg)
}

/// Multi-document YAML.
pub fn to_yaml(docs: &[Value]) -> Result<String> {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(d)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
        docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"))
    }

    fn params(build: &str, rules: usize) -> Params {
        Params {
            build: build.into(),
            gateway_port: 18080,
            classifier_port: 15051,
            backends: (0..rules).map(|i| SocketAddr::from(([127, 0, 0, 1], 9001 + i as u16))).collect(),
            wasm_url: "http://127.0.0.1:9003/semantic_router.wasm".into(),
            wasm_sha256: "ab".repeat(32),
            envoy_certs: PathBuf::from("/tmp/x/certs/envoy"),
            envoy_version: "1.40.0".into(),
            filter_config: Default::default(),
        }
    }

    #[test]
    fn renders_deploy_objects_with_only_the_overlay_changes() {
        let deployed = build("base").unwrap();
        let rules = of(&deployed, "HTTPRoute")["spec"]["rules"].as_array().unwrap().len();
        let docs = resources(&params("base", rules)).unwrap();

        let ep = of(&docs, "EnvoyProxy");
        assert_eq!(ep["spec"]["provider"], json!({"type": "Host", "host": {"envoyVersion": "1.40.0"}}));
        let boot: Value = serde_yaml::from_str(ep["spec"]["bootstrap"]["value"].as_str().unwrap()).unwrap();
        let cluster = &boot["static_resources"]["clusters"][0];
        assert_eq!(cluster["name"], CLASSIFIER_CLUSTER);
        assert_eq!(cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"], 15051);
        let wasm = &boot["static_resources"]["clusters"][1];
        assert_eq!(wasm["name"], WASM_CLUSTER);
        let tls = &wasm["transport_socket"]["typed_config"]["common_tls_context"];
        assert_eq!(tls["validation_context"]["trusted_ca"]["filename"], "/tmp/x/certs/envoy/ca.crt");
        assert_eq!(boot["static_resources"]["clusters"].as_array().unwrap().len(), 2);
        // The rest of the classifier cluster is deploy/'s.
        let orig: Value = serde_yaml::from_str(of(&deployed, "EnvoyProxy")["spec"]["bootstrap"]["value"].as_str().unwrap()).unwrap();
        assert_eq!(cluster["typed_extension_protocol_options"], orig["static_resources"]["clusters"][0]["typed_extension_protocol_options"]);

        assert_eq!(of(&docs, "Gateway")["spec"]["listeners"][0]["port"], 18080);
        let route = of(&docs, "HTTPRoute");
        let orig = of(&deployed, "HTTPRoute");
        for (i, rule) in route["spec"]["rules"].as_array().unwrap().iter().enumerate() {
            assert_eq!(rule["matches"], orig["spec"]["rules"][i]["matches"], "matches are deploy/'s");
            assert_eq!(rule["timeouts"], orig["spec"]["rules"][i]["timeouts"]);
            assert_eq!(rule["backendRefs"][0]["kind"], "Backend");
            assert_eq!(rule["backendRefs"][0]["name"], backend_name(i));
        }
        let backends: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Backend").collect();
        assert_eq!(backends.len(), rules);
        assert_eq!(backends[0]["spec"]["endpoints"][0]["ip"], json!({"address": "127.0.0.1", "port": 9001}));

        let eep = of(&docs, "EnvoyExtensionPolicy");
        let orig = of(&deployed, "EnvoyExtensionPolicy");
        assert_eq!(eep["spec"]["wasm"][0]["code"]["type"], "HTTP");
        assert_eq!(eep["spec"]["wasm"][0]["code"]["http"]["sha256"], "ab".repeat(32));
        assert_eq!(eep["spec"]["wasm"][0]["config"], orig["spec"]["wasm"][0]["config"], "filter config is deploy/'s");
        assert_eq!(eep["spec"]["wasm"][0]["rootID"], orig["spec"]["wasm"][0]["rootID"]);
        for kind in ["ClientTrafficPolicy", "BackendTrafficPolicy", "GatewayClass"] {
            assert_eq!(of(&docs, kind), of(&deployed, kind), "{kind} is deploy/'s");
        }
        for d in &docs {
            assert!(STANDALONE_KINDS.contains(&d["kind"].as_str().unwrap()) || d["kind"] == "Backend", "{}", d["kind"]);
        }
        assert!(resources(&params("base", rules + 1)).is_err(), "one backend per rule");
    }

    #[test]
    fn envoy_gateway_config_is_the_helm_values_with_the_standalone_provider() {
        let dir = PathBuf::from("/tmp/x");
        let g = GatewayParams {
            resources_dir: dir.join("r"),
            config_home: dir.join("c"),
            data_home: dir.join("d"),
            state_home: dir.join("s"),
            runtime_dir: dir.join("t"),
            admin_port: 19555,
            values: vec!["envoy-gateway/values.yaml".into()],
            extension: None,
        };
        let orig = one("envoy-gateway/values.yaml").unwrap()["config"]["envoyGateway"].clone();
        let registers = orig.get("extensionManager").is_some();
        let eg = envoy_gateway_config(&GatewayParams { extension: registers.then(|| "127.0.0.1:5999".parse().unwrap()), ..g.clone() }).unwrap();
        assert_eq!(eg["kind"], "EnvoyGateway");
        assert_eq!(eg["provider"]["custom"]["resource"]["file"]["paths"][0], "/tmp/x/r");
        assert_eq!(eg["provider"]["custom"]["infrastructure"]["type"], "Host");
        assert_eq!(eg["gateway"], orig["gateway"]);
        assert_eq!(eg["extensionApis"]["enableEnvoyPatchPolicy"], false);
        assert_eq!(eg["extensionApis"]["enableBackend"], true);
        if registers {
            assert_eq!(eg["extensionManager"]["service"]["fqdn"]["port"], 5999);
            assert_eq!(eg["extensionManager"]["hooks"], orig["extensionManager"]["hooks"], "hooks are deploy/'s");
        }
        // An extension server without an extension manager (or the reverse) is a mistake.
        assert!(envoy_gateway_config(&GatewayParams { extension: (!registers).then(|| "127.0.0.1:5999".parse().unwrap()), ..g }).is_err());
    }

    #[test]
    fn values_merge_like_helm() {
        let mut a = json!({"config": {"x": 1, "m": {"a": 1}}});
        merge(&mut a, &json!({"config": {"m": {"b": 2}, "y": [1]}}));
        assert_eq!(a, json!({"config": {"x": 1, "m": {"a": 1, "b": 2}, "y": [1]}}));
        assert_eq!(normalize("overlays/x/../../base/a.yaml"), "base/a.yaml");
    }

    #[test]
    fn json_patch_ops() {
        let mut v = json!({"a": {"b": [1, 2]}});
        apply_patch(&mut v, &json!([
            {"op": "replace", "path": "/a/b/0", "value": 9},
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "add", "path": "/a/c", "value": "x"},
            {"op": "remove", "path": "/a/b/1"},
            {"op": "add", "path": "/a/b/0", "value": 7},
        ])).unwrap();
        assert_eq!(v, json!({"a": {"b": [7, 9, 3], "c": "x"}}));
        assert!(apply_patch(&mut v, &json!([{"op": "replace", "path": "/a/zz", "value": 1}])).is_err());
        assert!(apply_patch(&mut v, &json!([{"op": "remove", "path": "/nope/x"}])).is_err());
    }
}
