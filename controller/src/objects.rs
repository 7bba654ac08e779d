//! What the controller reads: the Sluice objects of its namespace and the
//! Secrets they may reference, as plain data, and the seam ([`ObjectSource`])
//! through which they arrive. The Kubernetes watcher is one source; a test
//! feeds objects through the same channel without an API server. Knows
//! nothing of compiling or of status.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The four kinds of the `sluice.dev/v1alpha1` API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `AIGateway`.
    AIGateway,
    /// `Backend`.
    Backend,
    /// `MCPRoute`.
    MCPRoute,
    /// `Budget`.
    Budget,
}

impl Kind {
    /// Every kind, in the order they are rendered.
    pub const ALL: [Kind; 4] = [Kind::AIGateway, Kind::Backend, Kind::MCPRoute, Kind::Budget];

    /// The kind's name, as in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AIGateway => "AIGateway",
            Kind::Backend => "Backend",
            Kind::MCPRoute => "MCPRoute",
            Kind::Budget => "Budget",
        }
    }

    /// The resource's plural, as in its URL.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::AIGateway => "aigateways",
            Kind::Backend => "backends",
            Kind::MCPRoute => "mcproutes",
            Kind::Budget => "budgets",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `Kind/name`: how errors, conditions and the controller name an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Its kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// One Sluice object as read from the API.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceObject {
    /// Kind and name.
    pub key: ObjectKey,
    /// Its namespace.
    pub namespace: String,
    /// `metadata.uid` (events refer to it).
    pub uid: Option<String>,
    /// `metadata.generation`, echoed as the conditions' `observedGeneration`.
    pub generation: Option<i64>,
    /// `spec`, undecoded: decoding it is part of judging it.
    pub spec: serde_json::Value,
    /// `status` as last written (so unchanged status is not written again).
    pub status: Option<serde_json::Value>,
}

/// Everything the controller reads, at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Objects {
    /// The Sluice objects, in any order.
    pub objects: Vec<SourceObject>,
    /// Secret data by Secret name, then key (values that are not UTF-8 are
    /// left out: credentials are text).
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
}

/// The objects as they change. `None` until the source has read every kind
/// once, so a half-read namespace is never compiled and published.
pub type ObjectsSender = watch::Sender<Option<Arc<Objects>>>;

/// Feeds the controller with objects until `shutdown`.
pub trait ObjectSource: Send + 'static {
    /// Sends the full set of objects on every change. Returns when
    /// `shutdown` is cancelled, or with an error it cannot recover from.
    fn run(
        self,
        objects: ObjectsSender,
        shutdown: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A source fed by hand: tests (and tools) set the objects directly.
pub struct FedSource {
    updates: watch::Receiver<Option<Arc<Objects>>>,
}

/// The handle that feeds a [`FedSource`].
#[derive(Clone)]
pub struct Feeder {
    updates: Arc<watch::Sender<Option<Arc<Objects>>>>,
}

impl Feeder {
    /// Replaces the objects.
    pub fn set(&self, objects: Objects) {
        self.updates.send_replace(Some(Arc::new(objects)));
    }
}

/// A source and its feeder.
pub fn fed() -> (Feeder, FedSource) {
    let (tx, rx) = watch::channel(None);
    (
        Feeder {
            updates: Arc::new(tx),
        },
        FedSource { updates: rx },
    )
}

impl ObjectSource for FedSource {
    async fn run(
        mut self,
        objects: ObjectsSender,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            let current = self.updates.borrow_and_update().clone();
            if current.is_some() {
                objects.send_replace(current);
            }
            tokio::select! {
                changed = self.updates.changed() => if changed.is_err() { return Ok(()) },
                () = shutdown.cancelled() => return Ok(()),
            }
        }
    }
}
