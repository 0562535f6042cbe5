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

/// Names shared by the sidecar, the filter and the tests: response and upstream headers (the
/// vLLM Semantic Router names where it has one) and decision reasons.
pub mod vocabulary {
    /// The policy decision that routed the request.
    pub const HEADER_DECISION: &str = "x-vsr-selected-decision";
    /// A decision of the policy matched (v0.3 configs).
    pub const REASON_DECISION: &str = "decision";
    /// The classifier found a category but no decision matched: the default model.
    pub const REASON_NO_DECISION: &str = "no_decision_matched";
    /// The decision's fast_response plugin answered.
    pub const REASON_FAST_RESPONSE: &str = "fast_response";
}
