//! The Kubernetes [`StatusWriter`]: status through server-side apply on the
//! `/status` subresource (field manager `sluice-controller`, forced, so the
//! controller owns the fields it writes), and Events through kube-runtime's
//! recorder (`events.k8s.io/v1`, deduplicated into series).

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use serde_json::{json, Value};

use crate::kube_source::api_resource;
use crate::objects::SourceObject;
use crate::reconcile::{Note, StatusWriter};

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "sluice-controller";
/// Event notes are cut to this (the API allows 1 kB).
const MAX_NOTE: usize = 1000;

/// Writes to the API server.
pub struct KubeStatus {
    client: Client,
    recorder: Recorder,
}

impl KubeStatus {
    /// A writer reporting as `identity` (the pod name).
    pub fn new(client: Client, identity: &str) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(identity.to_owned()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
        }
    }
}

impl StatusWriter for KubeStatus {
    async fn write_status(&self, object: &SourceObject, status: Value) -> Result<(), String> {
        let resource = api_resource(object.key.kind);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &object.namespace, &resource);
        let patch = json!({
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "status": status,
        });
        api.patch_status(
            &object.key.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    async fn publish_event(&self, object: &SourceObject, note: Note) -> Result<(), String> {
        let resource = api_resource(object.key.kind);
        let mut message = note.message;
        if message.len() > MAX_NOTE {
            let mut cut = MAX_NOTE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(resource.api_version),
            kind: Some(resource.kind),
            name: Some(object.key.name.clone()),
            namespace: Some(object.namespace.clone()),
            uid: object.uid.clone(),
            ..Default::default()
        };
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.into(),
            note: Some(message),
            action: "Reconcile".into(),
            secondary: None,
        };
        self.recorder
            .publish(&event, &reference)
            .await
            .map_err(|e| e.to_string())
    }
}
