//! Compiles the contract with `protox` (pure Rust), so no system `protoc` is needed.
fn main() {
    let proto = "semantic_router/v1/router.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["."]).expect("router.proto must compile");

    #[cfg(feature = "grpc")]
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)
        .expect("generate gRPC stubs");

    #[cfg(not(feature = "grpc"))]
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("generate protobuf messages");
}
