//! Helpers of the deployment-manifest tests: a CRD schema validator and a small kustomize.
#![allow(dead_code)]

pub mod kustomize;
pub mod schema;
