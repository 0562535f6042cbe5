//! The server on an ephemeral port, called the way Envoy Gateway calls it: a tonic client with
//! typed messages (Envoy's `Listener` as a message, as Envoy Gateway declares it), which also checks
//! that the server's raw-bytes messages are wire-compatible with them.

use std::time::Duration;

use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{http_filter, HttpConnectionManager, HttpFilter};
use envoy_types::pb::envoy::extensions::wasm::v3::PluginConfig;
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use prost::Message;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// `PostHTTPListenerModifyRequest` with Envoy's typed listener (Envoy Gateway's field numbers).
#[derive(Clone, PartialEq, prost::Message)]
struct TypedListenerRequest {
    #[prost(message, optional, tag = "1")]
    listener: Option<Listener>,
    #[prost(message, optional, tag = "2")]
    post_listener_context: Option<crate::proto::PostHTTPListenerExtensionContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TypedListenerResponse {
    #[prost(message, optional, tag = "1")]
    listener: Option<Listener>,
}

/// `PostTranslateModifyRequest` / `Response`, typed listeners; the other lists stay opaque.
#[derive(Clone, PartialEq, prost::Message)]
struct TypedTranslateRequest {
    #[prost(message, optional, tag = "1")]
    post_translate_context: Option<crate::proto::PostTranslateExtensionContext>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    clusters: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "3")]
    secrets: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "4")]
    listeners: Vec<Listener>,
    #[prost(bytes = "vec", repeated, tag = "5")]
    routes: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TypedTranslateResponse {
    #[prost(bytes = "vec", repeated, tag = "1")]
    clusters: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    secrets: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "3")]
    listeners: Vec<Listener>,
    #[prost(bytes = "vec", repeated, tag = "4")]
    routes: Vec<Vec<u8>>,
}

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const WASM: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

fn wasm(name: &str, root_id: &str) -> HttpFilter {
    let config = PluginConfig { name: name.into(), root_id: root_id.into(), ..Default::default() };
    HttpFilter {
        name: format!("envoy.filters.http.wasm/{name}"),
        disabled: true,
        config_type: Some(http_filter::ConfigType::TypedConfig(Any { type_url: WASM.into(), value: Wasm { config: Some(config) }.encode_to_vec() })),
        ..Default::default()
    }
}

fn listener(name: &str, http_filters: Vec<HttpFilter>) -> Listener {
    let hcm = HttpConnectionManager { stat_prefix: name.into(), http_filters, ..Default::default() };
    Listener {
        name: name.into(),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(Any { type_url: HCM.into(), value: hcm.encode_to_vec() })),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The plugin configs of the listener's first HCM, by HTTP filter name.
fn plugins(l: &Listener) -> Vec<(String, Option<BoolValue>)> {
    let Some(filter::ConfigType::TypedConfig(a)) = &l.filter_chains[0].filters[0].config_type else { panic!("no HCM") };
    HttpConnectionManager::decode(a.value.as_slice())
        .unwrap()
        .http_filters
        .iter()
        .map(|f| {
            let Some(http_filter::ConfigType::TypedConfig(w)) = &f.config_type else { panic!() };
            (f.name.clone(), Wasm::decode(w.value.as_slice()).unwrap().config.unwrap().allow_on_headers_stop_iteration)
        })
        .collect()
}

async fn start() -> (Channel, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve_on(listener, crate::Options::default(), async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect_timeout(Duration::from_secs(5)).connect().await.unwrap();
    (channel, stop, server)
}

async fn unary<Req, Resp>(channel: &Channel, method: &'static str, req: Req) -> Resp
where
    Req: Message + Send + Sync + 'static,
    Resp: Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = PathAndQuery::from_static(method);
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    grpc.unary(tonic::Request::new(req), path, codec).await.unwrap_or_else(|s| panic!("{method}: {s}")).into_inner()
}

#[tokio::test]
async fn envoy_gateway_style_calls_get_the_flag_set_on_our_filter_only() {
    let (channel, stop, server) = start().await;

    // Health: overall and per service, as the kubelet probe and a client would ask.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "envoygateway.extension.EnvoyGatewayExtension"] {
        let status = health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap().into_inner().status;
        assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "health of {service:?}");
    }

    // HTTPListener hook.
    let l = listener("gw/http", vec![wasm("other", "other_root"), wasm("router", "semantic_router")]);
    let req = TypedListenerRequest { listener: Some(l.clone()), post_listener_context: Some(Default::default()) };
    let resp: TypedListenerResponse = unary(&channel, "/envoygateway.extension.EnvoyGatewayExtension/PostHTTPListenerModify", req).await;
    let out = resp.listener.expect("the listener comes back");
    assert_eq!(out.name, "gw/http");
    assert_eq!(
        plugins(&out),
        [("envoy.filters.http.wasm/other".to_string(), None), ("envoy.filters.http.wasm/router".to_string(), Some(BoolValue { value: true }))]
    );
    // Calling again with the answer changes nothing.
    let again: TypedListenerResponse = unary(
        &channel,
        "/envoygateway.extension.EnvoyGatewayExtension/PostHTTPListenerModify",
        TypedListenerRequest { listener: Some(out.clone()), post_listener_context: None },
    )
    .await;
    assert_eq!(again.listener.unwrap(), out);
    // A listener without our filter comes back as sent; no listener, no listener.
    let plain = listener("gw/plain", vec![wasm("other", "other_root")]);
    let resp: TypedListenerResponse = unary(
        &channel,
        "/envoygateway.extension.EnvoyGatewayExtension/PostHTTPListenerModify",
        TypedListenerRequest { listener: Some(plain.clone()), post_listener_context: None },
    )
    .await;
    assert_eq!(resp.listener.unwrap(), plain);
    let resp: TypedListenerResponse =
        unary(&channel, "/envoygateway.extension.EnvoyGatewayExtension/PostHTTPListenerModify", TypedListenerRequest::default()).await;
    assert_eq!(resp.listener, None);

    // Translation hook: listeners patched, the other resources echoed byte for byte.
    let req = TypedTranslateRequest {
        post_translate_context: Some(Default::default()),
        clusters: vec![vec![0x0a, 0x01, b'c']],
        secrets: vec![vec![0x0a, 0x01, b's']],
        listeners: vec![l, plain.clone()],
        routes: vec![vec![0x0a, 0x01, b'r']],
    };
    let resp: TypedTranslateResponse = unary(&channel, "/envoygateway.extension.EnvoyGatewayExtension/PostTranslateModify", req.clone()).await;
    assert_eq!((resp.clusters, resp.secrets, resp.routes), (req.clusters, req.secrets, req.routes));
    assert_eq!(resp.listeners.len(), 2);
    assert_eq!(resp.listeners[0], out);
    assert_eq!(resp.listeners[1], plain);

    // The other hooks echo their resource (the generated raw-bytes client).
    let mut client = crate::proto::service::envoy_gateway_extension_client::EnvoyGatewayExtensionClient::new(channel.clone());
    let route = client
        .post_route_modify(crate::proto::PostRouteModifyRequest { route: Some(vec![0x0a, 0x01, b'x']), post_route_context: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(route.route, Some(vec![0x0a, 0x01, b'x']));

    // A malformed listener is an error (Envoy Gateway then keeps its previous configuration).
    let err = client
        .post_http_listener_modify(crate::proto::PostHTTPListenerModifyRequest { listener: Some(vec![0x1a, 0x7f]), post_listener_context: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("server stops").unwrap().unwrap();
}
