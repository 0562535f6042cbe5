//! Test harnesses for the semantic router: a simulated OpenAI backend, a classifier test double,
//! a real-Envoy runner rendered from `envoy/envoy.yaml.tmpl`, and a proxy-wasm host on wasmtime.

pub mod classifier_double;
pub mod client;
pub mod envoy;
pub mod openai_sim;
pub mod wasm_host;
