//! Test harnesses for the semantic router: a simulated OpenAI backend, a classifier test double,
//! and a real-Envoy runner rendered from `envoy/envoy.yaml.tmpl`. The proxy-wasm host on
//! wasmtime lives with the tests that use it (`tests/tests/support`).

pub mod classifier_double;
pub mod client;
pub mod dynamo;
pub mod eg;
pub mod envoy;
pub mod extproc_baseline;
pub mod openai_sim;
pub mod sidecar;
