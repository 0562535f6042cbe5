//! Helpers of the deployment-manifest tests: a CRD schema validator, a small kustomize, and the
//! shape of Envoy Gateway's own configuration.
#![allow(dead_code)]

pub mod envoy_gateway;
pub mod kustomize;
pub mod schema;
