//! Envoy Gateway for real: the `envoy-gateway` binary (built by `just eg-build`) in standalone
//! mode (File provider, Host infrastructure) reads deploy/'s own objects, rendered by the
//! standalone overlay (`router_tests::eg::overlay`, listed in deploy/standalone/README.md),
//! fetches the Wasm module over HTTP with its sha256, and starts Envoy (the venv's binary) through
//! func-e. Requests then go through that Envoy: the EnvoyExtensionPolicy's filter, the bootstrap
//! cluster to the classifier on loopback (as the sidecar would be), the HTTPRoute, the
//! ClientTrafficPolicy's buffer limit, and the backends as `Backend`s.
//!
//! Two wirings, as deploy/ defines them: body routing (`base`: `route_mode: body`, a plain
//! EnvoyExtensionPolicy, no extension server; the generated filter has no
//! `allow_on_headers_stop_iteration`), and header routing (`overlays/header-routing` with
//! `values-header-routing.yaml`: `eg-extension`, the crate in process, is Envoy Gateway's
//! extension manager and sets `allow_on_headers_stop_iteration` on the filter Envoy Gateway
//! generates). Envoy Gateway binds fixed ports, so the two run one after the other.
//!
//! Body routing runs against the real parts: the release sidecar (`classifier-svc` with
//! classifier-svc/config/router.yaml) and Dynamo's frontend with the KV router and a prefill and
//! a decode mocker per model (`router_tests::dynamo`) as deploy/base's single backend. Header
//! routing needs a backend per rule and what each received, so it runs the classifier test
//! double and simulated backends.
//!
//! On failure the output has Envoy Gateway's log, the Envoy's config_dump (the xDS Envoy Gateway
//! generated) and the rendered resources.

use router_proto::v1::{CategoryScore, Decision};
use router_tests::classifier_double::{Behaviour, ClassifierDouble};
use router_tests::client::{HttpClient, Reply};
use router_tests::dynamo::{DynamoOptions, DynamoStack};
use router_tests::eg::{self, EnvoyGateway, Setup};
use router_tests::envoy::wasm_filter_path;
use router_tests::openai_sim::{self, SimState};
use router_tests::sidecar::SidecarProcess;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The sidecar config the real sidecar serves.
const SIDECAR_CONFIG: &str = "classifier-svc/config/router.yaml";
const MATH: &str = "What is the integral of x^2 from 0 to 3?";

/// Fields drop in order: Envoy Gateway (and its Envoy) first, then what it pointed at.
struct Stack {
    eg: EnvoyGateway,
    /// The classifier test double (header routing) ...
    classifier: Option<Arc<ClassifierDouble>>,
    /// ... or the real sidecar (body routing); taken to stop it.
    sidecar: Mutex<Option<SidecarProcess>>,
    /// The Dynamo deployment behind body routing's one rule.
    dynamo: Option<DynamoStack>,
    /// One simulated backend per HTTPRoute rule, in rule order (header routing).
    backends: Vec<Arc<SimState>>,
    /// Sent with every request (against Dynamo: opting out of the sidecar's semantic cache, so
    /// each request reaches Dynamo).
    extra_headers: Vec<(&'static str, &'static str)>,
    client: HttpClient,
    /// The filter's default model and the model the classifier double selects (the first
    /// header rule's model in header mode, the default model otherwise).
    default_model: String,
    selected_model: String,
    _extension: Option<tokio::sync::oneshot::Sender<()>>,
}

/// One wiring of deploy/ (a kustomization, its Helm values, whether it needs the extension server).
struct Wiring {
    build: &'static str,
    values: &'static [&'static str],
    extension: bool,
    /// The real sidecar and Dynamo instead of the test double and simulators.
    real: bool,
}

/// Header routing: the filter pauses at headers, so Envoy Gateway must call eg-extension.
const HEADER_ROUTING: Wiring = Wiring {
    build: "overlays/header-routing",
    values: &["envoy-gateway/values.yaml", "envoy-gateway/values-header-routing.yaml"],
    extension: true,
    real: false,
};

/// Body routing (deploy/'s base): a plain EnvoyExtensionPolicy, no extension server.
const BODY_ROUTING: Wiring = Wiring { build: "base", values: &["envoy-gateway/values.yaml"], extension: false, real: true };

fn decision(model: &str) -> Decision {
    Decision {
        selected_model: model.into(),
        category: "math".into(),
        confidence: 0.93,
        scores: vec![CategoryScore { category: "math".into(), score: 0.93 }],
        reason: router_proto::v1::Reason::Category as i32,
        ..Default::default()
    }
}

async fn stack(wiring: &Wiring) -> Stack {
    let routes = router_tests::eg::overlay::build(wiring.build).unwrap();
    let route = routes.iter().find(|d| d["kind"] == "HTTPRoute").unwrap();
    let rules = route["spec"]["rules"].as_array().unwrap().len();
    let mut addrs = Vec::new();
    let mut backends = Vec::new();
    let (mut classifier, mut sidecar, mut dynamo) = (None, None, None);
    let mut filter_config = serde_json::Map::new();
    let classifier_port;
    if wiring.real {
        assert_eq!(rules, 1, "every model behind the one Dynamo frontend");
        // Dynamo and the sidecar start side by side (seconds of Python and model loading).
        let d = tokio::task::spawn_blocking(|| DynamoStack::start(DynamoOptions::default()));
        let c = tokio::task::spawn_blocking(|| SidecarProcess::start(SIDECAR_CONFIG, &[]));
        let (d, c) = (d.await.unwrap().expect("dynamo starts"), c.await.unwrap().expect("sidecar starts"));
        addrs.push(SocketAddr::from(([127, 0, 0, 1], d.http_port)));
        classifier_port = c.grpc_port;
        // deploy/'s filter falls back to deploy/'s default model, which these mockers do not
        // serve: the filter's default is the sidecar config's (one Dynamo serves). Its classifier
        // budget is the one the Dynamo e2e uses: deploy/'s 300 ms is for a dedicated sidecar, not
        // one sharing a small CI machine with Envoy Gateway, Envoy and Dynamo.
        let config: Value = serde_yaml::from_str(&std::fs::read_to_string(router_tests::envoy::repo_root().join(SIDECAR_CONFIG)).unwrap()).unwrap();
        filter_config.insert("default_model".into(), config["default_model"].clone());
        filter_config.insert("timeout_ms".into(), json!(2000));
        assert!(d.models.iter().any(|m| *m == config["default_model"]), "Dynamo serves the default model {}", config["default_model"]);
        dynamo = Some(d);
        sidecar = Some(c);
    } else {
        for i in 0..rules {
            let (addr, state) = openai_sim::spawn("127.0.0.1:0".parse().unwrap(), &format!("rule{i}")).await.unwrap();
            addrs.push(addr);
            backends.push(state);
        }
        let double = ClassifierDouble::start(Behaviour::Decide).await;
        classifier_port = double.addr.port();
        classifier = Some(double);
    }

    let mut extension = None;
    let mut extension_addr = None;
    if wiring.extension {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        extension_addr = Some(listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(eg_extension::serve_on(listener, eg_extension::Options::default(), async move {
            let _ = stopped.await;
        }));
        extension = Some(stop);
    }

    let setup = Setup {
        classifier_port,
        build: wiring.build.into(),
        values: wiring.values.iter().map(|v| v.to_string()).collect(),
        backends: addrs,
        extension: extension_addr,
        wasm: wasm_filter_path(),
        work_dir: None,
        gateway_port: None,
    };
    let eg = tokio::task::spawn_blocking(move || {
        let mut eg = EnvoyGateway::start_with_filter_config(setup, filter_config).expect("envoy-gateway starts");
        eg.wait_envoy(Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e:#}"));
        eg
    })
    .await
    .unwrap();

    let eep = eg.resources.iter().find(|d| d["kind"] == "EnvoyExtensionPolicy").unwrap();
    let config = &eep["spec"]["wasm"][0]["config"];
    let default_model = config["default_model"].as_str().unwrap().to_string();
    let route = eg.resources.iter().find(|d| d["kind"] == "HTTPRoute").unwrap();
    let header = &route["spec"]["rules"][0]["matches"][0]["headers"][0];
    let selected_model = match header["value"].as_str() {
        Some(model) => {
            assert_eq!(header["name"], config["selected_model_header"]);
            model.to_string()
        }
        None => default_model.clone(),
    };
    if let Some(double) = &classifier {
        double.set(Behaviour::Fixed(decision(&selected_model)));
    }
    let extra_headers = if wiring.real { vec![("x-vsr-skip-cache", "true")] } else { vec![] };
    Stack {
        eg,
        classifier,
        sidecar: Mutex::new(sidecar),
        dynamo,
        backends,
        extra_headers,
        client: HttpClient::default(),
        default_model,
        selected_model,
        _extension: extension,
    }
}

fn chat(model: &str, prompt: &str) -> String {
    // Dynamo's mocker needs max_tokens; the simulators ignore it.
    json!({"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.1, "max_tokens": 8}).to_string()
}

impl Stack {
    async fn post(&self, body: impl Into<bytes::Bytes>, headers: &[(&str, &str)]) -> Reply {
        let headers: Vec<(&str, &str)> = headers.iter().chain(&self.extra_headers).copied().collect();
        self.client.post(&self.eg.url("/v1/chat/completions"), body, &headers).await.unwrap_or_else(|e| panic!("{e:#}\n{}", self.eg.diagnostics()))
    }

    /// Panics with Envoy Gateway's log and generated xDS.
    #[track_caller]
    fn check(&self, ok: bool, what: &str) {
        assert!(ok, "{what}\n{}", self.eg.diagnostics());
    }

    /// Waits until the Gateway answers through the filter (Envoy Gateway fetches the module and
    /// pushes the listener and routes after Envoy starts).
    async fn wait_routed(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.client.post(&self.eg.url("/v1/chat/completions"), chat("MoM", "warm-up"), &self.extra_headers).await {
                Ok(r) if r.status == 200 && r.header("x-vsr-selected-model").is_some() => return,
                Ok(r) => last = format!("{} {:?} {}", r.status, r.headers, r.text()),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.check(false, &format!("the Gateway never routed through the filter; last answer: {last}"));
    }

    fn condition(&self, kind: &str, ty: &str) -> Option<eg::Condition> {
        self.eg.conditions().into_iter().find(|c| c.kind == kind && c.r#type == ty)
    }

    /// Statuses Envoy Gateway reported for deploy/'s objects (logged in standalone mode).
    async fn assert_statuses(&self) {
        let want = [
            ("GatewayClass", "Accepted"),
            ("Gateway", "Accepted"),
            ("Gateway/listener", "Accepted"),
            ("Gateway/listener", "Programmed"),
            ("Backend", "Accepted"),
            ("HTTPRoute", "Accepted"),
            ("HTTPRoute", "ResolvedRefs"),
            ("ClientTrafficPolicy", "Accepted"),
            ("BackendTrafficPolicy", "Accepted"),
            ("EnvoyExtensionPolicy", "Accepted"),
        ];
        // Statuses are logged asynchronously; the Gateway is Programmed once Envoy runs.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let missing: Vec<String> = want
                .iter()
                .filter(|(k, t)| self.condition(k, t).map(|c| c.status != "True").unwrap_or(true))
                .map(|(k, t)| format!("{k} {t}: {:?}", self.condition(k, t)))
                .collect();
            if missing.is_empty() {
                // The Gateway itself is Programmed only with an address, which Envoy Gateway
                // takes from the Envoy Service in Kubernetes; on a host it reports
                // AddressNotAssigned (the listener above is Programmed).
                let gw = self.condition("Gateway", "Programmed");
                let ok = gw.as_ref().is_some_and(|c| c.status == "True" || c.reason == "AddressNotAssigned");
                self.check(ok, &format!("Gateway Programmed: {gw:?}"));
                return;
            }
            if Instant::now() > deadline {
                self.check(false, &format!("statuses not True: {missing:#?}\nall: {:#?}", self.eg.conditions()));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The Wasm filter(s) with our root id in the Envoy's config dump.
    fn wasm_filters(&self) -> Vec<Value> {
        let dump: Value = serde_json::from_str(&self.eg.config_dump()).unwrap_or(Value::Null);
        let mut out = Vec::new();
        collect_wasm(&dump, &mut out);
        out
    }
}

fn collect_wasm(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(map) => {
            if map.get("@type").and_then(Value::as_str) == Some("type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm")
                && map["config"]["root_id"] == "semantic_router"
            {
                out.push(v.clone());
            }
            map.values().for_each(|x| collect_wasm(x, out));
        }
        Value::Array(items) => items.iter().for_each(|x| collect_wasm(x, out)),
        _ => {}
    }
}

impl Stack {
    /// What every wiring must do: statuses, MoM classified and rewritten, explicit models pass
    /// without a callout, spoofed routing headers do not route, a large body fits the buffer
    /// limit, and the sidecar going away falls back to the default model. `routed` is the rule
    /// whose backend serves the selected model, `default` the catch-all rule's.
    async fn common_checks(&self, routed: usize, default: usize, header_routing: bool) {
        let classifier = self.classifier.as_ref().expect("the classifier test double");
        self.wait_routed().await;
        self.assert_statuses().await;
        let (routed_sim, default_sim) = (&self.backends[routed], &self.backends[default]);
        let routed_name = format!("rule{routed}");
        let default_name = format!("rule{default}");

        // MoM: classified, model rewritten, sent to the selected model's backend.
        let before = routed_sim.count();
        let r = self.post(chat("MoM", "What is the integral of x^2 from 0 to 3?"), &[]).await;
        self.check(r.status == 200, &format!("{} {}", r.status, r.text()));
        assert_eq!(r.header("x-backend-name"), Some(routed_name.as_str()));
        assert_eq!(r.json()["model"], self.selected_model.as_str(), "the backend saw the rewritten model");
        assert_eq!(r.header("x-vsr-selected-model"), Some(self.selected_model.as_str()));
        assert_eq!(r.header("x-vsr-selected-category"), Some("math"));
        assert_eq!(r.header("x-vsr-fallback"), None);
        assert_eq!(routed_sim.count(), before + 1);
        // Header routing routes on the header the filter set; body routing sets none.
        let routed_on = routed_sim.last().unwrap().header("x-selected-model").map(str::to_string);
        assert_eq!(routed_on.as_deref(), header_routing.then_some(self.selected_model.as_str()));
        let sent: Value = serde_json::from_slice(&routed_sim.last().unwrap().body).unwrap();
        assert_eq!(sent["temperature"], 0.1, "the rest of the body is preserved");

        // An explicit model passes unclassified; client-sent routing headers neither route it
        // nor reach the backend.
        let calls = classifier.calls();
        let spoof = [("x-selected-model", self.selected_model.as_str()), ("x-vsr-selected-category", "math")];
        let r = self.post(chat("qwen3-8b", "What is the integral of x?"), &spoof).await;
        self.check(r.status == 200, &format!("{} {}", r.status, r.text()));
        assert_eq!(r.header("x-backend-name"), Some(default_name.as_str()), "a spoofed header must not pick the route");
        assert_eq!(r.json()["model"], "qwen3-8b");
        let seen = default_sim.last().unwrap();
        assert_ne!(seen.header("x-selected-model"), Some(self.selected_model.as_str()), "spoofed x-selected-model reached the backend");
        assert_eq!(seen.header("x-vsr-selected-category"), None, "spoofed x-vsr-* header reached the backend");
        assert_eq!(classifier.calls(), calls, "explicit models make no callout");

        // A large body (above Envoy Gateway's default 32 KiB buffer, within the
        // ClientTrafficPolicy's 12Mi and the filter's 10 MiB) is buffered, classified, routed.
        let big = "lorem ipsum dolor sit amet ".repeat(200_000); // ~5.4 MB
        let body = json!({"model": "MoM", "messages": [
            {"role": "user", "content": big}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "What is the derivative of sin(x)?"}]})
        .to_string();
        let size = body.len();
        let r = self.post(body, &[]).await;
        self.check(r.status == 200, &format!("{size} bytes: {} {}", r.status, r.text()));
        assert_eq!(r.header("x-backend-name"), Some(routed_name.as_str()));
        assert_eq!(r.json()["model"], self.selected_model.as_str());
        let seen = routed_sim.last().unwrap();
        assert!(seen.body.len() > 5_000_000, "the backend got the whole body ({} of {size} bytes)", seen.body.len());

        // The sidecar goes away: the default model, promptly, marked as a fallback.
        classifier.stop();
        let started = Instant::now();
        let r = self.post(chat("MoM", "What is the integral of x?"), &[]).await;
        self.check(r.status == 200, &format!("{} {}", r.status, r.text()));
        assert_eq!(r.header("x-vsr-fallback"), Some("unavailable"));
        assert_eq!(r.json()["model"], self.default_model.as_str());
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }

    /// `dynamo_frontend_requests_total` for `model` and `status` (success / error), summed.
    fn dynamo_requests(&self, model: &str, status: &str) -> u64 {
        self.dynamo
            .as_ref()
            .expect("Dynamo")
            .metrics()
            .lines()
            .filter(|l| l.starts_with("dynamo_frontend_requests_total{"))
            .filter(|l| l.contains(&format!("model=\"{model}\"")) && l.contains(&format!("status=\"{status}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// The same guarantees against the real sidecar and Dynamo behind deploy/base's one rule:
    /// the answer's `model` is the model Dynamo served, so it shows what the filter sent.
    async fn dynamo_checks(&self) {
        self.wait_routed().await;
        self.assert_statuses().await;
        let served = self.dynamo.as_ref().unwrap().listed_models();

        // MoM: classified by the sidecar, rewritten, answered by Dynamo as the selected model.
        let r = self.post(chat("MoM", MATH), &[]).await;
        self.check(r.status == 200, &format!("{} {}", r.status, r.text()));
        assert_eq!(r.header("x-vsr-fallback"), None, "classified: {:?}", r.headers);
        assert_eq!(r.header("x-vsr-selected-category"), Some("math"), "{:?}", r.headers);
        let selected = r.header("x-vsr-selected-model").expect("x-vsr-selected-model").to_string();
        assert_ne!(selected, self.default_model, "the sidecar's math model, not the default");
        assert!(served.contains(&selected), "{selected} is one Dynamo serves: {served:?}");
        let body = r.json();
        assert_eq!(body["model"], selected.as_str(), "Dynamo answered as the selected model: {body}");
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["usage"]["completion_tokens"], 8, "the mocker generated max_tokens: {body}");

        // An explicit model Dynamo serves passes unclassified, and a client's routing headers
        // naming the other model change nothing (Dynamo routes on the body's model; what reaches
        // a backend is checked where the backend records it, in the header-routing wiring).
        let explicit = self.eg.counter("semantic_router.requests.explicit");
        let before = self.dynamo_requests(&self.default_model, "success");
        let spoof = [("x-selected-model", selected.as_str()), ("x-vsr-selected-category", "math"), ("x-vsr-selected-model", selected.as_str())];
        let r = self.post(chat(&self.default_model, "What is the integral of x?"), &spoof).await;
        self.check(r.status == 200, &format!("{} {}", r.status, r.text()));
        assert_eq!(r.json()["model"], self.default_model.as_str(), "Dynamo answered as the explicit model");
        assert_eq!(r.header("x-vsr-selected-model"), None, "no routing decision for an explicit model: {:?}", r.headers);
        assert_eq!(r.header("x-vsr-selected-category"), None, "{:?}", r.headers);
        assert_eq!(self.eg.counter("semantic_router.requests.explicit"), explicit + 1, "counted as explicit, no callout");
        assert_eq!(self.dynamo_requests(&self.default_model, "success"), before + 1, "Dynamo's metrics count it");

        // A large body (above Envoy Gateway's default 32 KiB buffer, within the
        // ClientTrafficPolicy's 12Mi and the filter's 10 MiB) passes the buffer: no 413 from the
        // Gateway, a routing decision, and a prompt answer. Dynamo may refuse a prompt this long
        // for the model's context; then its own 4xx JSON error comes back. (The header-routing
        // wiring sends 5 MB to a simulator; the mocker's frontend tokenizes every prompt, so
        // megabytes take it longer than a test should wait.)
        let big = "lorem ipsum dolor sit amet ".repeat(4_000); // ~108 KB
        let body = json!({"model": "MoM", "max_tokens": 8, "messages": [
            {"role": "user", "content": big}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "What is the derivative of sin(x)?"}]})
        .to_string();
        let size = body.len();
        let started = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(60), self.post(body, &[])).await.expect("a large body is answered, no hang");
        println!("{size} bytes: {} in {:?}, {}", r.status, started.elapsed(), r.text().chars().take(200).collect::<String>());
        self.check(r.status != 413, &format!("{size} bytes within the limit: {}", r.text()));
        let model = r.header("x-vsr-selected-model").map(str::to_string);
        self.check(model.as_deref().is_some_and(|m| served.iter().any(|s| s == m)), &format!("{size} bytes routed to a served model: {:?}", r.headers));
        let answer = r.json();
        if r.status == 200 {
            assert_eq!(answer["model"], model.unwrap().as_str(), "Dynamo answered as the selected model");
        } else {
            self.check((400..500).contains(&r.status) && answer.is_object(), &format!("a clean error: {} {}", r.status, r.text()));
        }

        // The sidecar goes away: the default model, promptly, marked as a fallback, and Dynamo
        // answers as it.
        drop(self.sidecar.lock().unwrap().take());
        let fallbacks = self.eg.counter("semantic_router.fallback.unavailable");
        let started = Instant::now();
        let r = self.post(chat("MoM", MATH), &[]).await;
        let elapsed = started.elapsed();
        self.check(r.status == 200, &format!("{} {}", r.status, r.text()));
        assert_eq!(r.header("x-vsr-fallback"), Some("unavailable"), "{:?}", r.headers);
        assert_eq!(r.header("x-vsr-selected-model"), Some(self.default_model.as_str()));
        assert_eq!(r.json()["model"], self.default_model.as_str(), "Dynamo answered as the default model");
        assert_eq!(self.eg.counter("semantic_router.fallback.unavailable"), fallbacks + 1, "the fallback is counted");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    }

    /// The module Envoy Gateway serves from its cache, and the flag the extension server sets.
    fn check_generated_filter(&self, flag: bool) {
        let filters = self.wasm_filters();
        self.check(filters.len() == 1, &format!("{} semantic_router Wasm filters in the config dump", filters.len()));
        let f = &filters[0];
        let set = f["config"]["allow_on_headers_stop_iteration"] == true;
        self.check(set == flag, &format!("allow_on_headers_stop_iteration should be {flag}: {f:#}"));
        // The module comes from Envoy Gateway's cache (its HTTPS server), not our file server.
        let uri = f["config"]["vm_config"]["code"]["remote"]["http_uri"]["uri"].as_str().unwrap_or_default();
        self.check(uri.starts_with("https://") && uri.contains(":18002/"), &format!("module not served by Envoy Gateway's cache: {uri}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn header_routing_with_the_extension_server() {
    let _one_at_a_time = eg::lock();
    let s = stack(&HEADER_ROUTING).await;
    // The header rule (rule 0) serves the selected model, the catch-all (last) the rest.
    s.common_checks(0, s.backends.len() - 1, true).await;
    s.check_generated_filter(true);
}

#[tokio::test(flavor = "multi_thread")]
async fn body_routing_with_a_plain_extension_policy() {
    let _one_at_a_time = eg::lock();
    let s = stack(&BODY_ROUTING).await;
    // One rule: the model is in the body only, for Dynamo's frontend to route on.
    s.dynamo_checks().await;
    s.check_generated_filter(false);
}
