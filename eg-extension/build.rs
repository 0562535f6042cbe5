//! tonic stubs for `envoygateway.extension.EnvoyGatewayExtension` (described in
//! `proto/eg_extension.proto`), generated without protoc from a hand-written description: the
//! messages are the hand-written ones in `src/proto.rs`.
use tonic_prost_build::manual::{Builder, Method, Service};

fn main() {
    let methods = [
        ("post_route_modify", "PostRouteModify"),
        ("post_virtual_host_modify", "PostVirtualHostModify"),
        ("post_http_listener_modify", "PostHTTPListenerModify"),
        ("post_cluster_modify", "PostClusterModify"),
        ("post_endpoints_modify", "PostEndpointsModify"),
        ("post_translate_modify", "PostTranslateModify"),
    ];
    let mut service = Service::builder().name("EnvoyGatewayExtension").package("envoygateway.extension");
    for (name, route) in methods {
        let message = route.strip_prefix("Post").unwrap();
        service = service.method(
            Method::builder()
                .name(name)
                .route_name(route)
                .input_type(format!("crate::proto::Post{message}Request"))
                .output_type(format!("crate::proto::Post{message}Response"))
                .codec_path("tonic_prost::ProstCodec")
                .build(),
        );
    }
    Builder::new().build_client(true).build_server(true).compile(&[service.build()]);
    println!("cargo:rerun-if-changed=build.rs");
}
