//! The semantic router's routing policy as pure logic: **signals → decisions → actions**.
//!
//! - [`model`]: the policy (named signals, decisions with nested `AND`/`OR`/`NOT` rules,
//!   priorities, model references and plugin actions);
//! - [`v03`]: reads vLLM Semantic Router v0.3 files into it (unknown keys are errors naming
//!   their path; vSR keys not implemented are accepted and listed);
//! - [`legacy`]: the `categories[].model_scores` format as the same policy;
//! - [`keyword`]: keyword matching methods; [`eval`]: per-request signal evaluation (the
//!   complexity signal last, since its composer looks at the others) and the winning decision.
//!
//! No IO and no models: the caller hands in what its models computed (prompt embedding,
//! winning category, guard probability, PII) as [`eval::Input`].

pub mod eval;
pub mod keyword;
pub mod legacy;
pub mod model;
pub mod v03;

pub use eval::{evaluate, CandidateVectors, Input, Matched, Selection};
pub use model::{DecisionSpec, ModelRef, Policy, SignalKind};
