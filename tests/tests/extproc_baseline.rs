//! The ExtProc benchmark baseline must do the same job as the filter, or the comparison is void.

use router_tests::classifier_double::{Behaviour, ClassifierDouble};
use router_tests::client::HttpClient;
use router_tests::envoy::{free_port, EnvoyConfig, EnvoyProcess};
use router_tests::extproc_baseline::ExtProcRouter;
use router_tests::openai_sim;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn extproc_baseline_routes_like_the_filter() {
    let (backend, sim) = openai_sim::spawn("127.0.0.1:0".parse().unwrap(), "primary").await.unwrap();
    let classifier = ClassifierDouble::start(Behaviour::Decide).await;
    let port = free_port();
    let router = ExtProcRouter::new(classifier.addr, "qwen3-8b", Duration::from_secs(1));
    tokio::spawn(router.serve(format!("127.0.0.1:{port}").parse().unwrap()));
    let mut config = EnvoyConfig::new(classifier.addr.port(), backend.port(), backend.port(), "{}");
    config.filter_config = None;
    config.extproc_port = Some(port);
    let envoy = tokio::task::spawn_blocking(move || EnvoyProcess::start(config)).await.unwrap().unwrap();

    let body = r#"{"model":"MoM","messages":[{"role":"user","content":"What is the integral of x?"}]}"#;
    let spoof = [("x-vsr-selected-category", "spoofed")];
    let r = HttpClient::default().post(&envoy.url("/v1/chat/completions"), body, &spoof).await.unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.text(), envoy.log_tail());
    assert_eq!(r.json()["model"], "deepseek-r1-math");
    assert_eq!(r.header("x-vsr-selected-model"), Some("deepseek-r1-math"));
    // The decision headers come from the same renderer as the filter's.
    assert_eq!(r.header("x-vsr-selected-decision"), Some("math"));
    assert_eq!(r.header("x-vsr-selected-reason"), Some("decision"));
    let seen = sim.last().unwrap();
    assert_eq!(seen.header("x-selected-model"), Some("deepseek-r1-math"));
    assert_eq!(seen.header("x-vsr-selected-category"), Some("math"), "spoofed header replaced");
    assert_eq!(classifier.calls(), 1);
}
