//! The config stream end to end: the controller runs in-process, fed
//! objects without Kubernetes, and a real `sluice run --controller` process
//! follows it. It serves the pushed config, switches when a new version is
//! pushed, NACKs one it cannot compile and keeps serving the old, keeps
//! serving when the controller stops, serves the config saved on disk after
//! its own restart, and picks up a new controller on the same address.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_controller::hub::Hub;
use sluice_controller::objects::{fed, Feeder, Kind, ObjectKey, Objects, SourceObject};
use sluice_controller::reconcile::{Note, Settings, StatusWriter};
use sluice_controller::{start, Options, Running};
use sluice_crds::ConfigBundle;
use support::{client, Sluice};

const TOKEN: &str = "stream-token-1234";

/// Keeps what the controller would write to the API server.
#[derive(Clone, Default)]
struct Recorder {
    statuses: Arc<Mutex<BTreeMap<String, Value>>>,
    events: Arc<Mutex<Vec<(String, Note)>>>,
}

impl StatusWriter for Recorder {
    fn write_status(
        &self,
        object: &SourceObject,
        status: Value,
    ) -> impl Future<Output = Result<(), String>> + Send {
        self.statuses
            .lock()
            .unwrap()
            .insert(object.key.to_string(), status);
        async { Ok(()) }
    }

    fn publish_event(
        &self,
        object: &SourceObject,
        note: Note,
    ) -> impl Future<Output = Result<(), String>> + Send {
        self.events
            .lock()
            .unwrap()
            .push((object.key.to_string(), note));
        async { Ok(()) }
    }
}

impl Recorder {
    fn condition(&self, object: &str, type_: &str) -> Option<Value> {
        let statuses = self.statuses.lock().unwrap();
        statuses.get(object)?["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)
            .cloned()
    }
}

fn object(kind: Kind, name: &str, spec: Value) -> SourceObject {
    SourceObject {
        key: ObjectKey {
            kind,
            name: name.into(),
        },
        namespace: "default".into(),
        uid: Some(format!("uid-{name}")),
        generation: Some(1),
        spec,
        status: None,
    }
}

/// A gateway whose client key comes from a Secret, serving `models` with
/// the built-in demo backend.
fn objects(models: &[&str]) -> Objects {
    let mut secrets = BTreeMap::new();
    secrets.insert(
        "client-keys".to_owned(),
        [("team-a".to_owned(), "sk-team-a".to_owned())]
            .into_iter()
            .collect(),
    );
    Objects {
        objects: vec![
            object(
                Kind::AIGateway,
                "gw",
                json!({
                    "auth": {"apiKeys": [{"name": "ci", "tenant": "team-a",
                        "valueFrom": {"secretKeyRef": {"name": "client-keys", "key": "team-a"}}}]},
                    "llm": {"routes": [{"models": models, "backends": [{"backend": "demo"}]}]}
                }),
            ),
            object(
                Kind::Backend,
                "demo",
                json!({"provider": "Demo", "models": ["sluice-demo"]}),
            ),
        ],
        secrets,
    }
}

async fn start_controller(listen: SocketAddr, recorder: Recorder) -> (Running, Feeder) {
    let (feeder, source) = fed();
    let hub = Arc::new(Hub::new());
    hub.set_leader(true);
    let options = Options {
        listen,
        admin: "127.0.0.1:0".parse().unwrap(),
        token: TOKEN.into(),
        settings: Settings {
            debounce: Duration::from_millis(20),
            status_interval: Duration::from_millis(200),
        },
    };
    let running = start(options, source, recorder, hub).await.unwrap();
    (running, feeder)
}

fn start_proxy(controller: SocketAddr, state: &Path) -> Sluice {
    let token_file = state.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    Sluice::start_with(
        None,
        &[],
        &[
            "--controller",
            &format!("http://{controller}"),
            "--controller-token-file",
            token_file.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--replica",
            "replica-1",
        ],
    )
}

async fn chat(sluice: &Sluice, model: &str) -> u16 {
    client()
        .post(sluice.v1("/chat/completions"))
        .bearer_auth("sk-team-a")
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn running_version(sluice: &Sluice) -> u64 {
    let config: Value = client()
        .get(format!("{}/config", sluice.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    config["version"].as_u64().unwrap()
}

/// Polls `check` until it holds (or fails the test after 10 s).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_follows_the_controller_and_outlives_it() {
    let state = tempfile::tempdir().unwrap();
    let recorder = Recorder::default();
    let (controller, feeder) =
        start_controller("127.0.0.1:0".parse().unwrap(), recorder.clone()).await;
    let address = controller.listen;
    feeder.set(objects(&["sluice-demo"]));

    // The first version: served, ACKed, and reported as programmed.
    let sluice = start_proxy(address, state.path());
    assert!(sluice.stderr().contains("from the controller at"));
    assert_eq!(chat(&sluice, "sluice-demo").await, 200);
    assert_eq!(running_version(&sluice).await, 1);
    eventually("Programmed 1/1", || async {
        recorder
            .condition("AIGateway/gw", "Programmed")
            .is_some_and(|c| c["status"] == "True" && c["message"] == "1/1 replicas run version 1")
    })
    .await;
    let accepted = recorder.condition("Backend/demo", "Accepted").unwrap();
    assert_eq!(accepted["status"], "True");
    assert_eq!(accepted["observedGeneration"], 1);

    // A new version: the proxy switches to it.
    feeder.set(objects(&["sluice-demo", "demo-2"]));
    eventually("version 2 serves demo-2", || async {
        chat(&sluice, "demo-2").await == 200
    })
    .await;
    assert_eq!(running_version(&sluice).await, 2);

    // A version the proxy cannot compile (published past the controller's
    // own check, as a newer controller might): NACKed, the old one serves.
    let mut bad = controller.hub.current().unwrap().bundle.clone();
    bad.documents[1]["spec"]["endpiont"] = json!("http://typo");
    controller.hub.publish(bad);
    eventually("the NACK reaches the controller", || async {
        !controller.hub.rollout().rejected.is_empty()
    })
    .await;
    let (replica, error) = controller.hub.rollout().rejected[0].clone();
    assert_eq!(replica, "replica-1");
    assert!(
        error.contains("Backend/demo: spec.endpiont: unknown field"),
        "{error}"
    );
    assert_eq!(chat(&sluice, "demo-2").await, 200);
    assert_eq!(running_version(&sluice).await, 2);
    eventually("Programmed=False Rejected and an Event", || async {
        let rejected = recorder
            .condition("AIGateway/gw", "Programmed")
            .is_some_and(|c| {
                c["reason"] == "Rejected"
                    && c["message"]
                        .as_str()
                        .unwrap()
                        .contains("1 replica of 1 rejected version 3")
            });
        let event = recorder.events.lock().unwrap().iter().any(|(o, n)| {
            o == "AIGateway/gw"
                && n.reason == "Rejected"
                && n.message.contains("replica-1 rejected version 3")
        });
        rejected && event
    })
    .await;

    // A good version again.
    feeder.set(objects(&["sluice-demo", "demo-4"]));
    eventually("version 4 serves demo-4", || async {
        chat(&sluice, "demo-4").await == 200
    })
    .await;
    assert_eq!(running_version(&sluice).await, 4);
    assert_eq!(chat(&sluice, "demo-2").await, 404);

    // The controller goes away: the proxy keeps serving.
    controller.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(chat(&sluice, "demo-4").await, 200);

    // The proxy restarts while the controller is away: it serves the
    // config it saved, without waiting.
    let saved: ConfigBundle = serde_json::from_slice(
        &std::fs::read(state.path().join("controller-config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved.version, 4);
    drop(sluice);
    let sluice = start_proxy(address, state.path());
    assert_eq!(chat(&sluice, "demo-4").await, 200);
    assert_eq!(running_version(&sluice).await, 4);
    assert_eq!(chat(&sluice, "sluice-demo").await, 200);

    // A new controller on the same address: the proxy reconnects and
    // follows it (a new controller counts versions afresh).
    let recorder = Recorder::default();
    let (controller, feeder) = start_controller(address, recorder.clone()).await;
    feeder.set(objects(&["demo-5"]));
    eventually("the new controller's config serves demo-5", || async {
        chat(&sluice, "demo-5").await == 200
    })
    .await;
    eventually("Programmed 1/1 on the new controller", || async {
        recorder
            .condition("AIGateway/gw", "Programmed")
            .is_some_and(|c| c["status"] == "True")
    })
    .await;
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_needs_the_token_and_the_leader() {
    let recorder = Recorder::default();
    let (controller, feeder) = start_controller("127.0.0.1:0".parse().unwrap(), recorder).await;
    feeder.set(objects(&["sluice-demo"]));
    let url = format!("http://{}/v1/config/stream?replica=r", controller.listen);
    let c = client();
    let response = c.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = c.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);

    // The first event is the current config, with its secret values.
    let mut response = c.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = response.chunk().await.unwrap().unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.starts_with("event: config\nid: 1\ndata: {"), "{text}");
    let data = text.lines().nth(2).unwrap().strip_prefix("data: ").unwrap();
    let bundle: ConfigBundle = serde_json::from_str(data).unwrap();
    assert_eq!(bundle.secrets["client-keys"]["team-a"], "sk-team-a");
    drop(response);

    controller.hub.set_leader(false);
    let response = c.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let ready = c
        .get(format!("http://{}/readyz", controller.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    controller.stop().await;
}
