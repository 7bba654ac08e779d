//! The Kubernetes [`ObjectSource`]: one reflector (a watch plus a local
//! cache) per kind of `sluice.dev/v1alpha1`, read as `DynamicObject`s, and
//! one for the namespace's Secrets. The objects are sent once every
//! reflector has listed its kind, and again on every change. Knows nothing
//! of compiling or status.

use std::collections::BTreeMap;
use std::pin::Pin;

use futures_util::stream::{select_all, BoxStream};
use futures_util::{Future, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::objects::{Kind, ObjectKey, ObjectSource, Objects, ObjectsSender, SourceObject};

/// The API group of the Sluice kinds.
pub const GROUP: &str = "sluice.dev";
/// Their version.
pub const VERSION: &str = "v1alpha1";

/// The `ApiResource` of a kind, for `DynamicObject` APIs.
pub fn api_resource(kind: Kind) -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: kind.as_str().into(),
        plural: kind.plural().into(),
    }
}

/// Watches one namespace.
pub struct KubeSource {
    /// The API client.
    pub client: Client,
    /// The namespace watched.
    pub namespace: String,
}

/// Secrets Helm keeps its releases in are large and never referenced.
const SECRET_FIELDS: &str = "type!=helm.sh/release.v1";

type Ready = Pin<Box<dyn Future<Output = ()> + Send>>;

impl ObjectSource for KubeSource {
    async fn run(self, objects: ObjectsSender, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut stores: Vec<(Kind, Store<DynamicObject>)> = Vec::new();
        let mut streams: Vec<BoxStream<'static, Result<(), String>>> = Vec::new();
        let mut ready: Vec<Ready> = Vec::new();
        for kind in Kind::ALL {
            let resource = api_resource(kind);
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &self.namespace, &resource);
            let writer = Writer::new(resource);
            let store = writer.as_reader();
            let waiting = store.clone();
            ready.push(Box::pin(async move {
                let _ = waiting.wait_until_ready().await;
            }));
            stores.push((kind, store));
            streams.push(
                reflector::reflector(writer, watcher(api, watcher::Config::default()))
                    .default_backoff()
                    .map(move |event| {
                        event.map(|_| ()).map_err(|e| {
                            format!("watching {}.{GROUP}: {e} (is the CRD installed, and may the controller's ServiceAccount list and watch it?)", kind.plural())
                        })
                    })
                    .boxed(),
            );
        }
        let secrets_api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secrets_writer: Writer<Secret> = Writer::default();
        let secrets = secrets_writer.as_reader();
        let waiting = secrets.clone();
        ready.push(Box::pin(async move {
            let _ = waiting.wait_until_ready().await;
        }));
        streams.push(
            reflector::reflector(
                secrets_writer,
                watcher(
                    secrets_api,
                    watcher::Config::default().fields(SECRET_FIELDS),
                ),
            )
            .default_backoff()
            .map(|event| {
                event
                    .map(|_| ())
                    .map_err(|e| format!("watching Secrets: {e}"))
            })
            .boxed(),
        );

        let mut events = select_all(streams);
        let mut all_ready = Box::pin(futures_util::future::join_all(ready));
        let mut synced = false;
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(())) => {}
                    Some(Err(error)) => {
                        tracing::warn!(%error, "watch failed; retrying with backoff");
                        continue;
                    }
                    None => anyhow::bail!("the watches ended"),
                },
                _ = &mut all_ready, if !synced => {
                    synced = true;
                    tracing::info!(namespace = %self.namespace, "read every kind; compiling");
                }
                () = shutdown.cancelled() => return Ok(()),
            }
            if !synced {
                continue;
            }
            let current = read(&stores, &secrets, &self.namespace);
            let changed = objects
                .borrow()
                .as_deref()
                .is_none_or(|previous| *previous != current);
            if changed {
                objects.send_replace(Some(std::sync::Arc::new(current)));
            }
        }
    }
}

/// The stores' contents as [`Objects`].
fn read(
    stores: &[(Kind, Store<DynamicObject>)],
    secrets: &Store<Secret>,
    namespace: &str,
) -> Objects {
    let mut objects = Vec::new();
    for (kind, store) in stores {
        for object in store.state() {
            let spec = object
                .data
                .get("spec")
                .cloned()
                .unwrap_or_else(|| serde_json::json!({}));
            objects.push(SourceObject {
                key: ObjectKey {
                    kind: *kind,
                    name: object.name_any(),
                },
                namespace: object.namespace().unwrap_or_else(|| namespace.to_owned()),
                uid: object.uid(),
                generation: object.metadata.generation,
                spec,
                status: object.data.get("status").cloned(),
            });
        }
    }
    let mut values = BTreeMap::new();
    for secret in secrets.state() {
        let mut keys = BTreeMap::new();
        for (key, value) in secret.data.iter().flatten() {
            match String::from_utf8(value.0.clone()) {
                Ok(text) => {
                    keys.insert(key.clone(), text);
                }
                Err(_) => {
                    tracing::debug!(secret = %secret.name_any(), %key, "skipping a Secret value that is not UTF-8");
                }
            }
        }
        values.insert(secret.name_any(), keys);
    }
    Objects {
        objects,
        secrets: values,
    }
}
