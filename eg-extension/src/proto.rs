//! The messages of Envoy Gateway's extension API, `envoygateway.extension`, as described in
//! `proto/eg_extension.proto` (this crate's own description of the part of the API it serves:
//! upstream names and field numbers, Envoy resources as bytes), written by hand for prost.
//!
//! Every Envoy resource (`envoy.config.listener.v3.Listener`, `Route`, `Cluster`, ...) is kept
//! as its encoded bytes: an embedded message and a `bytes` field have the same wire encoding,
//! so these messages are wire-compatible with the ones Envoy Gateway sends. Keeping bytes means
//! that the server returns everything it does not edit exactly as Envoy Gateway sent it,
//! including fields newer than any Rust binding of Envoy's API (a decode and re-encode through
//! generated types would silently drop those). [`crate::patch`] edits the listener bytes in place.

/// `ExtensionResource`: a Kubernetes object as the JSON of an `unstructured.Unstructured`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExtensionResource {
    #[prost(bytes = "vec", tag = "1")]
    pub unstructured_bytes: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PostRouteExtensionContext {
    #[prost(message, repeated, tag = "1")]
    pub extension_resources: Vec<ExtensionResource>,
    #[prost(string, repeated, tag = "2")]
    pub hostnames: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub extension_policies: Vec<ExtensionResource>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PostVirtualHostExtensionContext {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PostClusterExtensionContext {
    #[prost(message, repeated, tag = "1")]
    pub backend_extension_resources: Vec<ExtensionResource>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PostEndpointsExtensionContext {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PostHTTPListenerExtensionContext {
    #[prost(message, repeated, tag = "1")]
    pub extension_resources: Vec<ExtensionResource>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PostTranslateExtensionContext {
    #[prost(message, repeated, tag = "1")]
    pub extension_resources: Vec<ExtensionResource>,
}

/// `route`: an encoded `envoy.config.route.v3.Route`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PostRouteModifyRequest {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub route: Option<Vec<u8>>,
    #[prost(message, optional, tag = "2")]
    pub post_route_context: Option<PostRouteExtensionContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PostRouteModifyResponse {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub route: Option<Vec<u8>>,
}

/// `cluster`: an encoded `envoy.config.cluster.v3.Cluster`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PostClusterModifyRequest {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub cluster: Option<Vec<u8>>,
    #[prost(message, optional, tag = "2")]
    pub post_cluster_context: Option<PostClusterExtensionContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PostClusterModifyResponse {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub cluster: Option<Vec<u8>>,
}

/// `load_assignment`: an encoded `envoy.config.endpoint.v3.ClusterLoadAssignment`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PostEndpointsModifyRequest {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub load_assignment: Option<Vec<u8>>,
    #[prost(message, optional, tag = "2")]
    pub post_endpoints_context: Option<PostEndpointsExtensionContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PostEndpointsModifyResponse {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub load_assignment: Option<Vec<u8>>,
}

/// `virtual_host`: an encoded `envoy.config.route.v3.VirtualHost`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PostVirtualHostModifyRequest {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub virtual_host: Option<Vec<u8>>,
    #[prost(message, optional, tag = "2")]
    pub post_virtual_host_context: Option<PostVirtualHostExtensionContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PostVirtualHostModifyResponse {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub virtual_host: Option<Vec<u8>>,
}

/// `listener`: an encoded `envoy.config.listener.v3.Listener`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PostHTTPListenerModifyRequest {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub listener: Option<Vec<u8>>,
    #[prost(message, optional, tag = "2")]
    pub post_listener_context: Option<PostHTTPListenerExtensionContext>,
}

/// A missing `listener` leaves Envoy Gateway's listener as it was.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PostHTTPListenerModifyResponse {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub listener: Option<Vec<u8>>,
}

/// Encoded `Cluster`, `envoy.extensions.transport_sockets.tls.v3.Secret`, `Listener` and
/// `envoy.config.route.v3.RouteConfiguration` messages.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PostTranslateModifyRequest {
    #[prost(message, optional, tag = "1")]
    pub post_translate_context: Option<PostTranslateExtensionContext>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub clusters: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub secrets: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub listeners: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "5")]
    pub routes: Vec<Vec<u8>>,
}

/// The complete lists Envoy Gateway uses afterwards (for the resource types it sent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PostTranslateModifyResponse {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub clusters: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub secrets: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub listeners: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub routes: Vec<Vec<u8>>,
}

/// The generated tonic client and server of `envoygateway.extension.EnvoyGatewayExtension`.
#[allow(clippy::all, missing_docs)]
pub mod service {
    include!(concat!(env!("OUT_DIR"), "/envoygateway.extension.EnvoyGatewayExtension.rs"));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    const PROTO: &str = include_str!("../proto/eg_extension.proto");

    /// (message, field) -> field number, from the .proto text.
    fn proto_fields() -> BTreeMap<(String, String), u32> {
        let mut out = BTreeMap::new();
        {
            let text = PROTO;
            let mut message: Option<String> = None;
            for line in text.lines() {
                let line = line.split("//").next().unwrap().trim();
                if let Some(rest) = line.strip_prefix("message ") {
                    // `message Name {` opens a block, `message Name {}` is empty.
                    let name = rest.trim_end_matches('}').trim_end_matches('{').trim().to_string();
                    message = (!rest.ends_with('}')).then_some(name);
                    continue;
                }
                if line.starts_with('}') {
                    message = None;
                    continue;
                }
                let Some(m) = &message else { continue };
                // `[repeated] type name = N;`
                let Some((lhs, rhs)) = line.split_once('=') else { continue };
                let name = lhs.split_whitespace().last().unwrap().to_string();
                let number: u32 = rhs.trim().trim_end_matches(';').trim().parse().unwrap();
                out.insert((m.clone(), name), number);
            }
        }
        out
    }

    /// The hand-written messages use exactly the field numbers of the .proto: encoding a
    /// message with every field set yields exactly the numbers the .proto gives that message.
    #[test]
    fn field_numbers_match_the_proto() {
        use super::*;
        use prost::Message;
        let declared = proto_fields();
        let r = || ExtensionResource { unstructured_bytes: b"{}".to_vec() };
        let b = || Some(vec![1u8]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("ExtensionResource", r().encode_to_vec()),
            ("PostRouteExtensionContext", PostRouteExtensionContext { extension_resources: vec![r()], hostnames: vec!["h".into()], extension_policies: vec![r()] }.encode_to_vec()),
            ("PostClusterExtensionContext", PostClusterExtensionContext { backend_extension_resources: vec![r()] }.encode_to_vec()),
            ("PostHTTPListenerExtensionContext", PostHTTPListenerExtensionContext { extension_resources: vec![r()] }.encode_to_vec()),
            ("PostTranslateExtensionContext", PostTranslateExtensionContext { extension_resources: vec![r()] }.encode_to_vec()),
            ("PostRouteModifyRequest", PostRouteModifyRequest { route: b(), post_route_context: Some(Default::default()) }.encode_to_vec()),
            ("PostRouteModifyResponse", PostRouteModifyResponse { route: b() }.encode_to_vec()),
            ("PostClusterModifyRequest", PostClusterModifyRequest { cluster: b(), post_cluster_context: Some(Default::default()) }.encode_to_vec()),
            ("PostClusterModifyResponse", PostClusterModifyResponse { cluster: b() }.encode_to_vec()),
            ("PostEndpointsModifyRequest", PostEndpointsModifyRequest { load_assignment: b(), post_endpoints_context: Some(Default::default()) }.encode_to_vec()),
            ("PostEndpointsModifyResponse", PostEndpointsModifyResponse { load_assignment: b() }.encode_to_vec()),
            ("PostVirtualHostModifyRequest", PostVirtualHostModifyRequest { virtual_host: b(), post_virtual_host_context: Some(Default::default()) }.encode_to_vec()),
            ("PostVirtualHostModifyResponse", PostVirtualHostModifyResponse { virtual_host: b() }.encode_to_vec()),
            ("PostHTTPListenerModifyRequest", PostHTTPListenerModifyRequest { listener: b(), post_listener_context: Some(Default::default()) }.encode_to_vec()),
            ("PostHTTPListenerModifyResponse", PostHTTPListenerModifyResponse { listener: b() }.encode_to_vec()),
            ("PostTranslateModifyRequest", PostTranslateModifyRequest { post_translate_context: Some(Default::default()), clusters: vec![vec![1]], secrets: vec![vec![1]], listeners: vec![vec![1]], routes: vec![vec![1]] }.encode_to_vec()),
            ("PostTranslateModifyResponse", PostTranslateModifyResponse { clusters: vec![vec![1]], secrets: vec![vec![1]], listeners: vec![vec![1]], routes: vec![vec![1]] }.encode_to_vec()),
        ];
        let mut covered = std::collections::BTreeSet::new();
        for (message, bytes) in &cases {
            let mut ours: Vec<u32> = crate::wire::fields(bytes).unwrap().iter().map(|f| f.number).collect();
            ours.sort();
            ours.dedup();
            let mut theirs: Vec<u32> = declared.iter().filter(|((m, _), _)| m == message).map(|(_, n)| *n).collect();
            theirs.sort();
            assert_eq!(ours, theirs, "{message}: field numbers differ from proto/eg_extension.proto");
            covered.insert(message.to_string());
        }
        // Every message with fields is covered (the two empty contexts have none).
        let with_fields: std::collections::BTreeSet<String> = declared.keys().map(|(m, _)| m.clone()).collect();
        assert_eq!(with_fields, covered);
        assert_eq!(declared[&("PostHTTPListenerModifyRequest".to_string(), "listener".to_string())], 1);
        assert_eq!(declared[&("PostTranslateModifyRequest".to_string(), "listeners".to_string())], 4);
        assert_eq!(declared[&("PostTranslateModifyResponse".to_string(), "listeners".to_string())], 3);
    }

    /// The generated service (build.rs) has exactly the methods of the .proto's service, under
    /// the gRPC paths Envoy Gateway calls.
    #[test]
    fn service_methods_match_the_proto() {
        let generated = include_str!(concat!(env!("OUT_DIR"), "/envoygateway.extension.EnvoyGatewayExtension.rs"));
        let rpcs: Vec<&str> = PROTO
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .map(|l| l.split('(').next().unwrap().trim())
            .collect();
        assert_eq!(rpcs.len(), 6, "{rpcs:?}");
        assert!(PROTO.contains("package envoygateway.extension;") && PROTO.contains("service EnvoyGatewayExtension {"));
        for rpc in &rpcs {
            let path = format!("\"/envoygateway.extension.EnvoyGatewayExtension/{rpc}\"");
            assert!(generated.contains(&path), "build.rs lacks {rpc}");
        }
        assert_eq!(generated.matches("\"/envoygateway.extension.EnvoyGatewayExtension/").count(), 2 * rpcs.len(), "client and server paths, no extra methods");
    }
}
