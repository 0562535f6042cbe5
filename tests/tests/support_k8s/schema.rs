//! A strict validator for Kubernetes objects against structural OpenAPI v3 schemas, as the API
//! server applies them: unknown fields are errors (unless `x-kubernetes-preserve-unknown-fields`),
//! `type`, `enum`, `required`, `pattern`, lengths, bounds, `items`, `additionalProperties`,
//! `x-kubernetes-int-or-string`, `nullable`, `allOf` / `anyOf` / `oneOf`.
//!
//! CEL rules (`x-kubernetes-validations`) and `format` are not evaluated.

use std::collections::HashMap;
use std::path::Path;

use regex::Regex;
use serde_json::{json, Map, Value};

/// Schemas by (group, version, kind).
pub struct Schemas {
    by_gvk: HashMap<(String, String, String), Value>,
    /// A complete core/v1 PodSpec schema, taken from a CRD that embeds one.
    pub pod_spec: Value,
    patterns: std::sync::Mutex<HashMap<String, Option<Regex>>>,
}

pub fn yaml_to_json(v: serde_yaml::Value) -> Value {
    serde_json::to_value(v).expect("YAML value converts to JSON")
}

/// Every YAML document of a file (empty documents skipped).
pub fn load_yaml_docs(text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = serde_yaml::Value::deserialize(doc).map_err(|e| e.to_string())?;
        if !v.is_null() {
            out.push(yaml_to_json(v));
        }
    }
    Ok(out)
}

use serde::Deserialize;

impl Schemas {
    /// Loads every CRD under `dir` (individual files first, so they win over bundles) and
    /// adds the built-in schemas of the core kinds the manifests use.
    pub fn load(dir: &Path) -> Schemas {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("CRD directory {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort_by_key(|p| (p.file_name().unwrap().to_string_lossy().contains("bundle"), p.clone()));
        let mut by_gvk = HashMap::new();
        let mut pod_spec = Value::Null;
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for crd in load_yaml_docs(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display())) {
                if crd["kind"] != "CustomResourceDefinition" {
                    continue;
                }
                let group = crd["spec"]["group"].as_str().unwrap().to_string();
                let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
                for v in crd["spec"]["versions"].as_array().unwrap() {
                    if v["served"] != true {
                        continue;
                    }
                    let name = v["name"].as_str().unwrap().to_string();
                    let schema = v["schema"]["openAPIV3Schema"].clone();
                    if kind == "DynamoGraphDeployment" && pod_spec.is_null() {
                        let p = &schema["properties"]["spec"]["properties"]["services"]["additionalProperties"]
                            ["properties"]["extraPodSpec"];
                        if p["properties"]["containers"].is_object() {
                            let mut p = p.clone();
                            p["properties"].as_object_mut().unwrap().remove("mainContainer");
                            p["required"] = json!(["containers"]);
                            pod_spec = p;
                        }
                    }
                    by_gvk.entry((group.clone(), name, kind.clone())).or_insert(schema);
                }
            }
        }
        assert!(pod_spec.is_object(), "no CRD with an embedded PodSpec found in {}", dir.display());
        let mut s = Schemas { by_gvk, pod_spec, patterns: Default::default() };
        s.add_core_kinds();
        s
    }

    pub fn get(&self, api_version: &str, kind: &str) -> Option<&Value> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        self.by_gvk.get(&(group.to_string(), version.to_string(), kind.to_string()))
    }

    /// Validates a whole object: apiVersion/kind must name a known schema; `metadata` is checked
    /// against ObjectMeta (name required). Returns every problem found.
    pub fn validate_object(&self, obj: &Value) -> Vec<String> {
        let (Some(av), Some(kind)) = (obj["apiVersion"].as_str(), obj["kind"].as_str()) else {
            return vec!["document has no apiVersion/kind".into()];
        };
        let Some(schema) = self.get(av, kind) else {
            return vec![format!("no schema for {av} {kind} (unknown kind or version not served)")];
        };
        let mut errs = Vec::new();
        self.validate(obj, schema, "", false, &mut errs);
        if obj["metadata"]["name"].as_str().is_none_or(str::is_empty) {
            errs.push("metadata.name: required".into());
        }
        errs
    }

    /// Validates `value` at `path`; with `partial`, `required` is not enforced (patches).
    pub fn validate(&self, value: &Value, schema: &Value, path: &str, partial: bool, errs: &mut Vec<String>) {
        let at = |p: &str| if p.is_empty() { "<root>".to_string() } else { p.to_string() };
        if schema.is_null() || schema == &json!({}) {
            return;
        }
        // ObjectMeta: CRDs only say `type: object`; check it as the API server does.
        if path == ".metadata" || path.ends_with(".template.metadata") {
            match value.as_object() {
                Some(m) => self.validate_object_fields(m, &object_meta(), path, partial, errs),
                None => errs.push(format!("{path}: expected object, got {}", kind_of(value))),
            }
            return;
        }
        if value.is_null() {
            if schema["nullable"] == true {
                return;
            }
        }
        for sub in schema["allOf"].as_array().into_iter().flatten() {
            self.validate(value, sub, path, partial, errs);
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(alts) = schema[key].as_array() {
                let ok = alts.iter().any(|alt| {
                    let mut e = Vec::new();
                    self.validate(value, alt, path, partial, &mut e);
                    e.is_empty()
                });
                if !ok {
                    errs.push(format!("{}: matches none of the {key} alternatives", at(path)));
                }
            }
        }
        if schema["x-kubernetes-int-or-string"] == true {
            if !(value.is_i64() || value.is_u64() || value.is_string()) {
                errs.push(format!("{}: expected an integer or a string, got {}", at(path), kind_of(value)));
            }
        } else if let Some(t) = schema["type"].as_str() {
            let ok = match t {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                _ => true,
            };
            if !ok {
                errs.push(format!("{}: expected {t}, got {}", at(path), kind_of(value)));
                return;
            }
        }
        if let Some(allowed) = schema["enum"].as_array() {
            if !allowed.contains(value) {
                errs.push(format!("{}: {value} is not one of {}", at(path), Value::Array(allowed.clone())));
            }
        }
        match value {
            Value::String(s) => {
                if let Some(p) = schema["pattern"].as_str() {
                    if let Some(re) = self.regex(p) {
                        if !re.is_match(s) {
                            errs.push(format!("{}: {s:?} does not match pattern {p}", at(path)));
                        }
                    }
                }
                let n = s.chars().count() as u64;
                if schema["maxLength"].as_u64().is_some_and(|m| n > m) {
                    errs.push(format!("{}: longer than maxLength {}", at(path), schema["maxLength"]));
                }
                if schema["minLength"].as_u64().is_some_and(|m| n < m) {
                    errs.push(format!("{}: shorter than minLength {}", at(path), schema["minLength"]));
                }
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap();
                if schema["maximum"].as_f64().is_some_and(|m| x > m) {
                    errs.push(format!("{}: {x} is above maximum {}", at(path), schema["maximum"]));
                }
                if schema["minimum"].as_f64().is_some_and(|m| x < m) {
                    errs.push(format!("{}: {x} is below minimum {}", at(path), schema["minimum"]));
                }
            }
            Value::Array(items) => {
                if schema["maxItems"].as_u64().is_some_and(|m| items.len() as u64 > m) {
                    errs.push(format!("{}: more than maxItems {}", at(path), schema["maxItems"]));
                }
                if !partial && schema["minItems"].as_u64().is_some_and(|m| (items.len() as u64) < m) {
                    errs.push(format!("{}: fewer than minItems {}", at(path), schema["minItems"]));
                }
                for (i, item) in items.iter().enumerate() {
                    self.validate(item, &schema["items"], &format!("{path}[{i}]"), partial, errs);
                }
            }
            Value::Object(map) => self.validate_object_fields(map, schema, path, partial, errs),
            _ => {}
        }
    }

    fn validate_object_fields(&self, map: &Map<String, Value>, schema: &Value, path: &str, partial: bool, errs: &mut Vec<String>) {
        let at = |p: &str| if p.is_empty() { "<root>".to_string() } else { p.to_string() };
        let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
        let props = schema["properties"].as_object();
        if !partial {
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap_or_default();
                if !map.contains_key(r) {
                    errs.push(format!("{}: missing required field {r:?}", at(path)));
                }
            }
        }
        for (k, v) in map {
            let child = format!("{path}.{k}");
            if let Some(p) = props.and_then(|p| p.get(k)) {
                self.validate(v, p, &child, partial, errs);
            } else if let Some(ap) = schema.get("additionalProperties") {
                match ap {
                    Value::Bool(true) => {}
                    Value::Bool(false) => errs.push(format!("{child}: unknown field")),
                    s => self.validate(v, s, &child, partial, errs),
                }
            } else if !preserve {
                errs.push(format!("{child}: unknown field"));
            }
        }
    }

    fn regex(&self, pattern: &str) -> Option<Regex> {
        self.patterns
            .lock()
            .unwrap()
            .entry(pattern.to_string())
            .or_insert_with(|| Regex::new(pattern).ok())
            .clone()
    }

    fn add_core_kinds(&mut self) {
        let pod = self.pod_spec.clone();
        let template = json!({"type": "object", "required": ["spec"], "properties": {
            "metadata": {"type": "object"}, "spec": pod}});
        let label_selector = json!({"type": "object", "properties": {
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "matchExpressions": {"type": "array", "items": {"type": "object", "required": ["key", "operator"], "properties": {
                "key": {"type": "string"}, "operator": {"type": "string"},
                "values": {"type": "array", "items": {"type": "string"}}}}}}});
        let preserve = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        let str_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
        let strs = json!({"type": "array", "items": {"type": "string"}});
        let peers = json!({"type": "array", "items": {"type": "object", "properties": {
            "podSelector": label_selector.clone(), "namespaceSelector": label_selector.clone(),
            "ipBlock": {"type": "object", "required": ["cidr"], "properties": {"cidr": {"type": "string"}, "except": strs.clone()}}}}});
        let np_ports = json!({"type": "array", "items": {"type": "object", "properties": {
            "port": {"x-kubernetes-int-or-string": true}, "endPort": {"type": "integer"},
            "protocol": {"type": "string", "enum": ["TCP", "UDP", "SCTP"]}}}});
        let top = |spec: Value, extra: Value| {
            let mut props = json!({"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                "metadata": {"type": "object"}});
            if !spec.is_null() {
                props["spec"] = spec;
            }
            for (k, v) in extra.as_object().unwrap() {
                props[k] = v.clone();
            }
            json!({"type": "object", "required": ["apiVersion", "kind", "metadata"], "properties": props})
        };
        let kinds: Vec<(&str, &str, Value)> = vec![
            ("v1", "Namespace", top(json!({"type": "object", "properties": {"finalizers": strs.clone()}}), json!({}))),
            ("v1", "ConfigMap", top(Value::Null, json!({"data": str_map.clone(), "binaryData": str_map.clone(),
                "immutable": {"type": "boolean"}}))),
            ("v1", "ServiceAccount", top(Value::Null, json!({"automountServiceAccountToken": {"type": "boolean"},
                "secrets": {"type": "array", "items": preserve.clone()},
                "imagePullSecrets": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}}))),
            ("v1", "Service", top(json!({"type": "object", "properties": {
                "type": {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
                "selector": str_map.clone(), "clusterIP": {"type": "string"}, "externalName": {"type": "string"},
                "sessionAffinity": {"type": "string"}, "publishNotReadyAddresses": {"type": "boolean"},
                "ports": {"type": "array", "items": {"type": "object", "required": ["port"], "properties": {
                    "name": {"type": "string"}, "port": {"type": "integer"}, "protocol": {"type": "string", "enum": ["TCP", "UDP", "SCTP"]},
                    "targetPort": {"x-kubernetes-int-or-string": true}, "nodePort": {"type": "integer"},
                    "appProtocol": {"type": "string"}}}}}}), json!({}))),
            ("rbac.authorization.k8s.io/v1", "ClusterRole", top(Value::Null, json!({
                "rules": {"type": "array", "items": {"type": "object", "required": ["verbs"], "properties": {
                    "apiGroups": strs.clone(), "resources": strs.clone(), "verbs": strs.clone(),
                    "resourceNames": strs.clone(), "nonResourceURLs": strs.clone()}}},
                "aggregationRule": preserve.clone()}))),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", top(Value::Null, json!({
                "subjects": {"type": "array", "items": {"type": "object", "required": ["kind", "name"], "properties": {
                    "kind": {"type": "string", "enum": ["ServiceAccount", "User", "Group"]}, "name": {"type": "string"},
                    "namespace": {"type": "string"}, "apiGroup": {"type": "string"}}}},
                "roleRef": {"type": "object", "required": ["apiGroup", "kind", "name"], "properties": {
                    "apiGroup": {"type": "string"}, "kind": {"type": "string", "enum": ["ClusterRole", "Role"]},
                    "name": {"type": "string"}}}}))),
            ("apps/v1", "Deployment", top(json!({"type": "object", "required": ["selector", "template"], "properties": {
                "replicas": {"type": "integer", "minimum": 0}, "selector": label_selector.clone(), "template": template.clone(),
                "strategy": preserve.clone(), "minReadySeconds": {"type": "integer"}, "revisionHistoryLimit": {"type": "integer"},
                "progressDeadlineSeconds": {"type": "integer"}, "paused": {"type": "boolean"}}}), json!({}))),
            ("networking.k8s.io/v1", "NetworkPolicy", top(json!({"type": "object", "required": ["podSelector"], "properties": {
                "podSelector": label_selector.clone(),
                "policyTypes": {"type": "array", "items": {"type": "string", "enum": ["Ingress", "Egress"]}},
                "ingress": {"type": "array", "items": {"type": "object", "properties": {
                    "from": peers.clone(), "ports": np_ports.clone()}}},
                "egress": {"type": "array", "items": {"type": "object", "properties": {
                    "to": peers, "ports": np_ports}}}}}), json!({}))),
            ("apps/v1", "DaemonSet", top(json!({"type": "object", "required": ["selector", "template"], "properties": {
                "selector": label_selector, "template": template, "updateStrategy": preserve,
                "minReadySeconds": {"type": "integer"}, "revisionHistoryLimit": {"type": "integer"}}}), json!({}))),
        ];
        for (av, kind, schema) in kinds {
            let (g, v) = av.split_once('/').unwrap_or(("", av));
            self.by_gvk.insert((g.into(), v.into(), kind.into()), schema);
        }
    }
}

fn object_meta() -> Value {
    json!({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 253,
                 "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
        "namespace": {"type": "string", "maxLength": 63, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "generateName": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
    }})
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
