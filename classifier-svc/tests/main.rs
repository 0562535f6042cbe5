//! The service's tests above the unit level, in one test binary (each test binary is linked on
//! its own and instantiates the same tokio, tonic and burn generics again). A module here is
//! what a file under `tests/` was; run one with
//! `cargo test --release -p classifier-svc --test integration <module>::`.

mod grpc;
mod parity;
mod policy_features;
mod policy_v03;
mod units;
