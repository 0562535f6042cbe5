//! Every integration test of the project, in one test binary.
//!
//! One binary instead of one per file: each test binary is linked on its own and instantiates the
//! same tokio, hyper, tonic and serde generics again, which made the eleven of them a sixth of a
//! cold `just test`. A module here is what a file under `tests/` was; run one with
//! `cargo test --release -p router-tests --test integration <module>::`.
//! Tests of all modules share the test threads, so whatever needs a machine-wide resource takes
//! its lock (`router_tests::eg::lock` for Envoy Gateway's fixed ports).

mod support;
mod support_k8s;

mod body_mode_e2e;
mod deploy_manifests;
mod dynamo_e2e;
mod eg_standalone;
mod envoy_e2e;
mod extproc_baseline;
mod faults_under_load;
mod hostile_input;
mod real_classifier;
mod v03_e2e;
mod wasm_module;
