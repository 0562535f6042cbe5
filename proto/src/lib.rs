//! Generated types for `semantic_router.v1`, the contract between the wasm filter and the
//! classifier sidecar. Enable the `grpc` feature for tonic client/server stubs.

pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/semantic_router.v1.rs"));

    /// Fully-qualified gRPC service name, as the filter passes it to `dispatch_grpc_call`.
    pub const CLASSIFIER_SERVICE: &str = "semantic_router.v1.Classifier";
    /// Method name of the routing decision RPC.
    pub const CLASSIFY_METHOD: &str = "Classify";
    /// Service and method the filter calls to store a response in the semantic cache.
    pub const CACHE_SERVICE: &str = "semantic_router.v1.SemanticCache";
    pub const STORE_METHOD: &str = "Store";
}

/// Names shared by the sidecar, the filter and the tests: the routing header, the decision
/// headers (vLLM Semantic Router's names, after a configurable prefix, `x-vsr-` by default) and
/// the decision reasons. The filter renders every decision header from these; the sidecar only
/// adds the guard and PII details it alone knows.
pub mod vocabulary {
    /// The header Envoy's routes match on.
    pub const SELECTED_MODEL_HEADER: &str = "x-selected-model";
    /// The default prefix of the decision headers.
    pub const PREFIX: &str = "x-vsr-";

    /// Decision-header names after the prefix.
    pub mod suffix {
        pub const SELECTED_MODEL: &str = "selected-model";
        pub const SELECTED_CATEGORY: &str = "selected-category";
        pub const SELECTED_DECISION: &str = "selected-decision";
        pub const SELECTED_REASON: &str = "selected-reason";
        pub const SELECTED_REASONING: &str = "selected-reasoning";
        pub const CONFIDENCE: &str = "confidence";
        pub const INJECTED_SYSTEM_PROMPT: &str = "injected-system-prompt";
        pub const FALLBACK: &str = "fallback";
        pub const SKIPPED: &str = "skipped";
        pub const CACHE_HIT: &str = "cache-hit";
        pub const JAILBREAK_BLOCKED: &str = "jailbreak-blocked";
        pub const JAILBREAK_TYPE: &str = "jailbreak-type";
        pub const JAILBREAK_CONFIDENCE: &str = "jailbreak-confidence";
        pub const PII_VIOLATION: &str = "pii-violation";
        pub const PII_TYPES: &str = "pii-types";
        pub const DEBUG_SCORES: &str = "debug-scores";
        pub const DEBUG_PROCESSING_US: &str = "debug-processing-us";
        pub const DEBUG_JAILBREAK: &str = "debug-jailbreak";
        /// Client request headers the filter honours (when allowed by its config).
        pub const SKIP_CACHE: &str = "skip-cache";
        pub const SKIP_PROCESSING: &str = "skip-processing";
        pub const DEBUG: &str = "debug";
    }

    /// Full names with the default prefix, for the sidecar and the tests.
    pub const HEADER_MODEL: &str = "x-vsr-selected-model";
    pub const HEADER_CATEGORY: &str = "x-vsr-selected-category";
    pub const HEADER_DECISION: &str = "x-vsr-selected-decision";
    pub const HEADER_REASON: &str = "x-vsr-selected-reason";
    pub const HEADER_JAILBREAK_BLOCKED: &str = "x-vsr-jailbreak-blocked";
    pub const HEADER_JAILBREAK_TYPE: &str = "x-vsr-jailbreak-type";
    pub const HEADER_JAILBREAK_CONFIDENCE: &str = "x-vsr-jailbreak-confidence";
    pub const HEADER_PII_VIOLATION: &str = "x-vsr-pii-violation";
    pub const HEADER_PII_TYPES: &str = "x-vsr-pii-types";

    /// A decision of the policy matched (v0.3 configs).
    pub const REASON_DECISION: &str = "decision";
    /// The classifier found a category but no decision matched: the default model.
    pub const REASON_NO_DECISION: &str = "no_decision_matched";
    /// The decision's fast_response plugin answered.
    pub const REASON_FAST_RESPONSE: &str = "fast_response";

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn full_names_are_the_prefix_and_suffix() {
            for (full, s) in [
                (HEADER_MODEL, suffix::SELECTED_MODEL),
                (HEADER_CATEGORY, suffix::SELECTED_CATEGORY),
                (HEADER_DECISION, suffix::SELECTED_DECISION),
                (HEADER_REASON, suffix::SELECTED_REASON),
                (HEADER_JAILBREAK_BLOCKED, suffix::JAILBREAK_BLOCKED),
                (HEADER_JAILBREAK_TYPE, suffix::JAILBREAK_TYPE),
                (HEADER_JAILBREAK_CONFIDENCE, suffix::JAILBREAK_CONFIDENCE),
                (HEADER_PII_VIOLATION, suffix::PII_VIOLATION),
                (HEADER_PII_TYPES, suffix::PII_TYPES),
            ] {
                assert_eq!(full, format!("{PREFIX}{s}"));
            }
        }
    }
}
