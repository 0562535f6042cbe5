//! Plugin configuration: the JSON string Envoy hands the filter at plugin start.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Route to `default_model` when the classifier cannot answer.
    Open,
    /// Answer 503 when the classifier cannot answer.
    Closed,
}

/// Where the routing decision takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteMode {
    /// Pause at request headers until the decision is made, then set `selected_model_header`
    /// and clear the route cache, so Envoy routes on the header (several backends). Needs
    /// `allow_on_headers_stop_iteration: true` in the Wasm plugin config.
    Header,
    /// Let request headers go upstream at once and rewrite only the body's `model`: for one
    /// backend that routes on the body (a Dynamo frontend, vLLM with several models, LiteLLM).
    /// Works without `allow_on_headers_stop_iteration`.
    Body,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Header routing (pause at headers, route on `selected_model_header`) or body-only routing.
    pub route_mode: RouteMode,
    /// Envoy cluster of the classifier sidecar (needs HTTP/2).
    pub classifier_cluster: String,
    /// Deadline of the Classify callout.
    pub timeout_ms: u64,
    /// Model names that ask the router to choose ("MoM", "auto").
    pub auto_model_names: Vec<String>,
    /// Model used when the classifier cannot answer (fail-open) or decides nothing.
    pub default_model: String,
    pub fail_mode: FailMode,
    /// Largest request body the filter buffers; larger bodies get 413.
    pub max_body_bytes: usize,
    /// How many earlier user/assistant turns go with the last user message as context.
    pub context_turns: usize,
    /// Longest text (bytes) sent to the classifier per turn; the encoder reads only the first
    /// few hundred tokens, so sending a 2 MB turn would only cost tokenizer time.
    pub max_classify_bytes: usize,
    /// Request paths the filter handles; every other path only has spoofed headers stripped.
    pub routed_paths: Vec<String>,
    /// Header Envoy's routes match on.
    pub selected_model_header: String,
    /// Prefix of the decision headers; client-sent headers with this prefix are removed.
    pub header_prefix: String,
    /// Copy the decision headers onto the response, so clients can see the route.
    pub response_headers: bool,
    /// Request header naming the tenant; cached answers are never shared across tenants. It must
    /// be set by a trusted layer in front (authentication), not taken from clients as is.
    pub tenant_header: String,
    /// Largest response the filter copies back to the semantic cache.
    pub cache_max_body_bytes: usize,
    /// Honour `x-vsr-skip-processing: true` (auto-routed requests go to `default_model`
    /// without classification). Off by default: it lets clients bypass the guards.
    pub allow_skip_processing: bool,
    /// Honour `x-vsr-debug: true` (category scores and timings as response headers). Off by
    /// default: it reveals the routing policy.
    pub allow_debug: bool,
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self {
            route_mode: RouteMode::Header,
            classifier_cluster: "semantic_router_classifier".into(),
            timeout_ms: 300,
            auto_model_names: vec!["MoM".into(), "auto".into()],
            default_model: String::new(),
            fail_mode: FailMode::Open,
            max_body_bytes: 10 * 1024 * 1024,
            context_turns: 4,
            max_classify_bytes: 4096,
            routed_paths: vec![
                "/v1/chat/completions".into(),
                "/v1/completions".into(),
                "/v1/responses".into(),
            ],
            selected_model_header: router_proto::vocabulary::SELECTED_MODEL_HEADER.into(),
            header_prefix: router_proto::vocabulary::PREFIX.into(),
            response_headers: true,
            tenant_header: "x-tenant-id".into(),
            cache_max_body_bytes: 1024 * 1024,
            allow_skip_processing: false,
            allow_debug: false,
        }
    }
}

impl FilterConfig {
    /// Parses and validates the plugin configuration. An empty configuration is invalid
    /// because fail-open needs a default model.
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Err("plugin configuration is empty; at least \"default_model\" is required".into());
        }
        let config: FilterConfig =
            serde_json::from_slice(raw).map_err(|e| format!("invalid plugin configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.default_model.trim().is_empty() {
            problems.push("default_model must be set".to_string());
        }
        if self.classifier_cluster.trim().is_empty() {
            problems.push("classifier_cluster must be set".to_string());
        }
        if self.timeout_ms == 0 || self.timeout_ms > 60_000 {
            problems.push(format!("timeout_ms must be in 1..=60000, got {}", self.timeout_ms));
        }
        if self.auto_model_names.is_empty() {
            problems.push("auto_model_names must not be empty".to_string());
        }
        if self.max_body_bytes == 0 {
            problems.push("max_body_bytes must be positive".to_string());
        }
        if !is_header_name(&self.selected_model_header) {
            problems.push(format!("selected_model_header {:?} is not a lowercase header name", self.selected_model_header));
        }
        if !is_header_name(self.header_prefix.trim_end_matches('-')) {
            problems.push(format!("header_prefix {:?} is not a lowercase header prefix", self.header_prefix));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("invalid plugin configuration: {}", problems.join("; ")))
        }
    }

    pub fn is_auto_model(&self, model: &str) -> bool {
        self.auto_model_names.iter().any(|name| name == model)
    }

    pub fn is_routed_path(&self, path: &str) -> bool {
        let path = path.split('?').next().unwrap_or(path);
        self.routed_paths.iter().any(|p| p == path)
    }

    /// Headers a client must never set itself: they decide the route.
    pub fn is_reserved_header(&self, name: &str) -> bool {
        // Both configured names are validated lowercase, so an ASCII-case-insensitive compare
        // matches what lowercasing `name` would, without a copy per header per request.
        let prefix = &self.header_prefix;
        name.eq_ignore_ascii_case(&self.selected_model_header)
            || name.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    }

    pub fn header(&self, suffix: &str) -> String {
        format!("{}{}", self.header_prefix, suffix)
    }
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = FilterConfig::parse(br#"{"default_model":"qwen"}"#).unwrap();
        assert_eq!(c.default_model, "qwen");
        assert_eq!(c.timeout_ms, 300);
        assert!(c.is_auto_model("MoM") && c.is_auto_model("auto") && !c.is_auto_model("qwen"));
        assert_eq!(c.fail_mode, FailMode::Open);
        assert_eq!(c.route_mode, RouteMode::Header);
        let c = FilterConfig::parse(br#"{"default_model":"qwen","route_mode":"body"}"#).unwrap();
        assert_eq!(c.route_mode, RouteMode::Body);
        let e = FilterConfig::parse(br#"{"default_model":"m","route_mode":"path"}"#).unwrap_err();
        assert!(e.contains("path"), "{e}");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = FilterConfig::parse(b"").unwrap_err();
        assert!(e.contains("default_model"), "{e}");
        let e = FilterConfig::parse(br#"{"default_model":"m","timeot_ms":5}"#).unwrap_err();
        assert!(e.contains("unknown field `timeot_ms`"), "{e}");
        let e = FilterConfig::parse(br#"{"default_model":"m","timeout_ms":0}"#).unwrap_err();
        assert!(e.contains("timeout_ms"), "{e}");
        let e = FilterConfig::parse(br#"{"default_model":"m","fail_mode":"sideways"}"#).unwrap_err();
        assert!(e.contains("sideways"), "{e}");
        let e = FilterConfig::parse(br#"{"default_model":"m","selected_model_header":"X Model"}"#).unwrap_err();
        assert!(e.contains("selected_model_header"), "{e}");
    }

    #[test]
    fn reserved_headers_and_paths() {
        let c = FilterConfig::parse(br#"{"default_model":"m"}"#).unwrap();
        assert!(c.is_reserved_header("X-Selected-Model"));
        assert!(c.is_reserved_header("x-vsr-selected-category"));
        assert!(!c.is_reserved_header("x-request-id"));
        assert!(c.is_routed_path("/v1/chat/completions?x=1"));
        assert!(!c.is_routed_path("/v1/models"));
    }
}
