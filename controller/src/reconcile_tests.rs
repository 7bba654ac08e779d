#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::render::tests::namespace;

#[derive(Clone, Default)]
struct Recorder {
    writes: Arc<Mutex<Vec<(String, Value)>>>,
    events: Arc<Mutex<Vec<(String, Note)>>>,
}

impl StatusWriter for Recorder {
    fn write_status(
        &self,
        object: &SourceObject,
        status: Value,
    ) -> impl Future<Output = Result<(), String>> + Send {
        self.writes
            .lock()
            .unwrap()
            .push((object.key.to_string(), status));
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

async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

#[tokio::test]
async fn the_leader_writes_changed_status_once_and_announces_problems_once() {
    let hub = Arc::new(Hub::new());
    let recorder = Recorder::default();
    let (tx, rx) = watch::channel(None);
    let shutdown = CancellationToken::new();
    let settings = Settings {
        debounce: Duration::from_millis(5),
        status_interval: Duration::from_millis(20),
    };
    let task = tokio::spawn(run(
        hub.clone(),
        Arc::new(Metrics::new()),
        recorder.clone(),
        settings,
        rx,
        shutdown.clone(),
    ));

    // A standby compiles and publishes (to be ready), but writes nothing.
    tx.send_replace(Some(Arc::new(namespace())));
    settle().await;
    assert_eq!(hub.current().unwrap().bundle.version, 1);
    assert!(recorder.writes.lock().unwrap().is_empty());

    hub.set_leader(true);
    settle().await;
    {
        let writes = recorder.writes.lock().unwrap();
        assert_eq!(
            writes.len(),
            2,
            "one write per object, not one per tick: {writes:?}"
        );
        let gateway = &writes.iter().find(|(k, _)| k == "AIGateway/gw").unwrap().1;
        assert_eq!(gateway["conditions"][2]["reason"], "NoReplicas");
    }

    // A Backend turns invalid: its status says so, one Warning Event.
    let mut broken = namespace();
    broken.objects[0].spec["provider"] = json!("Gopher");
    tx.send_replace(Some(Arc::new(broken)));
    settle().await;
    settle().await;
    let events = recorder.events.lock().unwrap().clone();
    let invalid: Vec<_> = events
        .iter()
        .filter(|(k, n)| k == "Backend/openai" && n.reason == "Invalid" && n.warning)
        .collect();
    assert_eq!(invalid.len(), 1, "{events:?}");
    assert_eq!(
        hub.current().unwrap().bundle.version,
        1,
        "nothing new published"
    );
    let last_backend = recorder
        .writes
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(k, _)| k == "Backend/openai")
        .unwrap()
        .1
        .clone();
    assert_eq!(last_backend["conditions"][0]["status"], "False");

    shutdown.cancel();
    task.await.unwrap();
}
