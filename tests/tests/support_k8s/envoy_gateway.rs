//! The shape of Envoy Gateway's own configuration (`EnvoyGateway`, group
//! `gateway.envoyproxy.io/v1alpha1`), which the Helm chart renders from
//! `config.envoyGateway` into the `envoy-gateway-config` ConfigMap. It is not a CRD, so there is
//! no schema to load: this one is transcribed from `api/v1alpha1/envoygateway_types.go`,
//! `shared_types.go` and `backend_types.go` at Envoy Gateway v1.9.0 (JSON names, enums, patterns
//! and bounds from the kubebuilder markers). Strict for everything this deployment sets
//! (gateway, provider, logging, extensionApis, extensionManager); sections it does not use are
//! accepted as any object. `validate_extension_manager` mirrors the checks Envoy Gateway runs
//! at start-up (`api/v1alpha1/validation/envoygateway_validate.go`).

use serde_json::{json, Value};

fn any_object() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

fn gvk_list() -> Value {
    json!({"type": "array", "items": {"type": "object", "required": ["group", "version", "kind"], "properties": {
        "group": {"type": "string"}, "version": {"type": "string"}, "kind": {"type": "string"}}}})
}

fn secret_ref() -> Value {
    json!({"type": "object", "required": ["name"], "properties": {
        "group": {"type": "string"}, "kind": {"type": "string"}, "name": {"type": "string"}, "namespace": {"type": "string"}}})
}

const HOSTNAME: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const FQDN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\.?$";

/// `ExtensionManager` (one entry of `extensionManager` / `extensionManagers`).
pub fn extension_manager() -> Value {
    let hooks = json!({"type": "array", "items": {"type": "string",
        "enum": ["VirtualHost", "Route", "HTTPListener", "Translation", "Cluster", "Endpoints"]}});
    let include_all = json!({"type": "object", "properties": {"includeAll": {"type": "boolean"}}});
    let service = json!({"type": "object", "properties": {
        // BackendEndpoint, inline
        "hostname": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": HOSTNAME},
        "fqdn": {"type": "object", "required": ["hostname", "port"], "properties": {
            "hostname": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": FQDN},
            "port": {"type": "integer", "minimum": 0, "maximum": 65535}}},
        "ip": {"type": "object", "required": ["address", "port"], "properties": {
            "address": {"type": "string"}, "port": {"type": "integer", "minimum": 0, "maximum": 65535}}},
        "unix": {"type": "object", "required": ["path"], "properties": {"path": {"type": "string"}}},
        "zone": {"type": "string"},
        // deprecated
        "host": {"type": "string"},
        "port": {"type": "integer", "minimum": 0},
        "tls": {"type": "object", "required": ["certificateRef"], "properties": {
            "certificateRef": secret_ref(), "clientCertificateRef": secret_ref()}},
        "retry": {"type": "object", "properties": {
            "maxAttempts": {"type": "integer"}, "initialBackoff": {"type": "string"}, "maxBackoff": {"type": "string"},
            "backoffMultiplier": {"type": "object", "required": ["numerator"], "properties": {
                "numerator": {"type": "integer"}, "denominator": {"type": "integer"}}},
            "RetryableStatusCodes": {"type": "array", "items": {"type": "string", "enum": [
                "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"]}}}}}});
    json!({"type": "object", "required": ["hooks", "service"], "properties": {
        "name": {"type": "string"},
        "resources": gvk_list(),
        "policyResources": gvk_list(),
        "backendResources": gvk_list(),
        "hooks": {"type": "object", "properties": {
            "xdsTranslator": {"type": "object", "properties": {
                "pre": hooks.clone(), "post": hooks,
                "translation": {"type": "object", "properties": {
                    "listener": include_all.clone(), "route": include_all.clone(),
                    "cluster": include_all.clone(), "secret": include_all}}}}}},
        "service": service,
        "failOpen": {"type": "boolean"},
        "maxMessageSize": {"x-kubernetes-int-or-string": true, "pattern": "^[1-9]+[0-9]*([EPTGMK]i|[EPTGMk])?$"}}})
}

/// `EnvoyGatewaySpec` as it appears under `config.envoyGateway` in the Helm values.
pub fn config_schema() -> Value {
    let level = json!({"type": "string", "enum": ["trace", "debug", "info", "warn", "error", "off", "critical"]});
    let components = ["default", "provider", "gateway-api", "xds-translator", "xds-server", "xds", "infrastructure", "global-ratelimit"];
    let mut levels = serde_json::Map::new();
    for c in components {
        levels.insert(c.to_string(), level.clone());
    }
    json!({"type": "object", "properties": {
        "gateway": {"type": "object", "properties": {"controllerName": {"type": "string"}}},
        "provider": {"type": "object", "required": ["type"], "properties": {
            "type": {"type": "string", "enum": ["Kubernetes", "Custom"]},
            "kubernetes": any_object(), "custom": any_object()}},
        "logging": {"type": "object", "properties": {
            "level": {"type": "object", "properties": Value::Object(levels)},
            "encoder": any_object()}},
        "admin": any_object(),
        "telemetry": any_object(),
        "xdsServer": any_object(),
        "rateLimit": any_object(),
        "extensionManager": extension_manager(),
        "extensionManagers": {"type": "array", "minItems": 1, "items": extension_manager()},
        "extensionApis": {"type": "object", "properties": {
            "enableEnvoyPatchPolicy": {"type": "boolean"}, "enableBackend": {"type": "boolean"},
            "disableLua": {"type": "boolean"}, "enableLua": {"type": "boolean"},
            "enableSDSSecretRef": {"type": "boolean"}}},
        "gatewayAPI": any_object(),
        "runtimeFlags": any_object(),
        "envoyProxy": any_object()}})
}

/// Envoy Gateway's start-up checks of the extension manager settings
/// (`validateEnvoyGatewayExtensionManagers` / `validateEnvoyGatewayExtensionManager` /
/// `validateExtensionService`).
pub fn validate_extension_manager(eg: &Value) -> Result<(), String> {
    let single = &eg["extensionManager"];
    let plural = &eg["extensionManagers"];
    if !single.is_null() && plural.as_array().is_some_and(|a| !a.is_empty()) {
        return Err("extensionManager and extensionManagers are mutually exclusive".into());
    }
    let check = |em: &Value| -> Result<(), String> {
        let xds = &em["hooks"]["xdsTranslator"];
        let n = |k: &str| xds[k].as_array().map_or(0, Vec::len);
        if xds.is_null() || n("pre") + n("post") == 0 {
            return Err("registered extension has no hooks specified".into());
        }
        let s = &em["service"];
        if s.is_null() {
            return Err("extension service config is empty".into());
        }
        let host = s["host"].as_str().is_some_and(|h| !h.is_empty());
        let targets = [host, !s["fqdn"].is_null(), !s["ip"].is_null(), !s["unix"].is_null()];
        match targets.iter().filter(|t| **t).count() {
            0 => Err("extension service must contain a configured target".into()),
            1 => Ok(()),
            _ => Err("only one backend target can be configured for the extension manager".into()),
        }
    };
    if let Some(list) = plural.as_array() {
        let mut names = std::collections::BTreeSet::new();
        for (i, em) in list.iter().enumerate() {
            let name = em["name"].as_str().filter(|n| !n.is_empty()).ok_or(format!("extension manager at index {i}: name is required"))?;
            if !names.insert(name) {
                return Err(format!("extension manager at index {i}: duplicate name {name:?}"));
            }
            check(em)?;
        }
        return Ok(());
    }
    if single.is_null() {
        return Ok(());
    }
    check(single)
}
