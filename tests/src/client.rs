//! A small HTTP/1.1 client for the tests and benchmarks, with a hard per-request deadline so a
//! hung request fails the test instead of hanging it.

use anyhow::{anyhow, Result};
use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    deadline: Duration,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

impl HttpClient {
    pub fn new(deadline: Duration) -> Self {
        Self { inner: Client::builder(TokioExecutor::new()).build_http(), deadline }
    }

    pub async fn post(&self, url: &str, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> Result<Reply> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header("content-type", "application/json");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.send(builder.body(Full::new(body.into()))?).await
    }

    pub async fn get(&self, url: &str) -> Result<Reply> {
        self.send(Request::builder().uri(url).body(Full::new(Bytes::new()))?).await
    }

    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<Reply> {
        let exchange = async {
            let response = self.inner.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, anyhow::Error>(Reply { status: parts.status.as_u16(), headers: parts.headers, body })
        };
        tokio::time::timeout(self.deadline, exchange)
            .await
            .map_err(|_| anyhow!("request hung for more than {:?}", self.deadline))?
    }
}
