//! Semantic-router HTTP filter for Envoy (proxy-wasm).
//!
//! The request logic lives in plain Rust ([`filter`], [`openai`], [`config`]) behind the
//! [`host::Host`] trait, so it is unit-tested natively; [`wasm`] is the thin proxy-wasm glue.

pub mod body_mutations;
pub mod config;
pub mod filter;
pub mod host;
pub mod json_edit;
pub mod latency;
pub mod metrics;
pub mod openai;
pub mod plugins;
pub mod sse;
pub mod usage;

#[cfg(target_arch = "wasm32")]
mod wasm;
