//! Recorded requests, through the library and through `/_mock/requests`,
//! and the server's lifecycle.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed assumption is a failed test"
)]

mod common;

use common::{get, post, send};
use http::{Method, StatusCode};
use serde_json::json;
use sluice_test_upstream::{Options, Upstream};

#[tokio::test]
async fn requests_are_recorded_oldest_first() {
    let up = Upstream::start(Options::default()).await.unwrap();
    let body = json!({"model":"m","messages":[]}).to_string();
    post(
        up.addr,
        "/v1/chat/completions?trace=1",
        &[("Authorization", "Bearer sk-test")],
        &body,
    )
    .await;
    get(up.addr, "/v1/models").await;
    // Controlled and failing requests are recorded too.
    post(up.addr, "/v1/embeddings", &[("x-mock-status", "500")], "{}").await;

    let requests = up.requests();
    assert_eq!(requests.len(), 3);
    let first = &requests[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/chat/completions?trace=1");
    assert_eq!(first.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(first.header("AUTHORIZATION"), Some("Bearer sk-test"));
    assert!(first.headers.iter().any(|(k, _)| k == "authorization"));
    assert!(first.headers.iter().all(|(k, _)| *k == k.to_lowercase()));
    assert_eq!(first.body, body);
    assert_eq!(first.json()["model"], "m");
    assert_eq!(requests[1].method, "GET");
    assert_eq!(requests[1].json(), serde_json::Value::Null);
    assert_eq!(requests[2].header("x-mock-status"), Some("500"));

    up.clear();
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn requests_endpoint_lists_and_clears() {
    let up = Upstream::start(Options::default()).await.unwrap();
    post(
        up.addr,
        "/v1/completions",
        &[],
        r#"{"model":"m","prompt":"p"}"#,
    )
    .await;

    let listed = get(up.addr, "/_mock/requests").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.header("x-upstream-name"), Some("upstream"));
    let listed = listed.json();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "the listing itself is not recorded"
    );
    assert_eq!(listed[0]["method"], "POST");
    assert_eq!(listed[0]["path"], "/v1/completions");
    assert_eq!(listed[0]["body"], r#"{"model":"m","prompt":"p"}"#);
    assert_eq!(listed, serde_json::to_value(up.requests()).unwrap());

    let cleared = send(up.addr, Method::DELETE, "/_mock/requests", &[], "")
        .await
        .unwrap();
    assert_eq!(cleared.status, StatusCode::NO_CONTENT);
    assert!(up.requests().is_empty());
    assert_eq!(get(up.addr, "/_mock/requests").await.json(), json!([]));
}

#[tokio::test]
async fn recording_can_be_turned_off() {
    let up = Upstream::start(Options {
        record: false,
        ..Options::default()
    })
    .await
    .unwrap();
    let reply = post(
        up.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"m","messages":[]}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(up.requests().is_empty());
    assert_eq!(get(up.addr, "/_mock/requests").await.json(), json!([]));
}

#[tokio::test]
async fn stopping_frees_the_port() {
    let up = Upstream::start(Options::default()).await.unwrap();
    let addr = up.addr;
    assert_eq!(up.url(), format!("http://127.0.0.1:{}", addr.port()));
    assert_eq!(get(addr, "/v1/models").await.status, StatusCode::OK);
    up.stop().await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn dropping_stops_the_server() {
    let up = Upstream::start(Options::default()).await.unwrap();
    let addr = up.addr;
    drop(up);
    // The server task notices the cancellation on its next poll.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{addr} still accepts connections after the upstream was dropped");
}

#[tokio::test]
async fn start_on_a_given_listener() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = Upstream::start_on(listener, Options::default())
        .await
        .unwrap();
    assert_eq!(up.addr, addr);
    assert_eq!(get(addr, "/v1/models").await.status, StatusCode::OK);
}
