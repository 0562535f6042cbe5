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
