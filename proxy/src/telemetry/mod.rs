//! Telemetry off the request path: requests hand a finished [`AccessRecord`]
//! to a bounded channel; one writer thread turns it into a JSON access-log
//! line and Prometheus metrics. The request path never blocks on either: a
//! full channel drops the record and counts the drop. The writer drains the
//! queue on a timer, so a request never wakes it.

mod access_log;
mod metrics;
mod record;

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sluice_crds::snapshot::AccessLogTarget;

pub use metrics::Metrics;
pub use record::{AccessRecord, Exchange, Usage};

/// Records buffered between requests and the writer.
const CHANNEL_CAPACITY: usize = 16 * 1024;

enum Message {
    Record(Box<AccessRecord>),
    Stop,
}

/// The sending side, cloned into every request.
#[derive(Clone)]
pub struct TelemetrySink {
    tx: SyncSender<Message>,
    metrics: Arc<Metrics>,
}

impl TelemetrySink {
    /// Queues a record; never blocks.
    pub fn send(&self, record: AccessRecord) {
        match self.tx.try_send(Message::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.access_log_dropped.inc();
            }
        }
    }
}

/// Owns the writer thread.
pub struct Telemetry {
    sink: TelemetrySink,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Telemetry {
    /// Starts the writer thread for `target`.
    pub fn start(target: &AccessLogTarget) -> std::io::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let output = access_log::Output::open(target)?;
        let (tx, rx) = sync_channel(CHANNEL_CAPACITY);
        let writer_metrics = metrics.clone();
        let writer = std::thread::Builder::new()
            .name("sluice-telemetry".into())
            .spawn(move || run_writer(rx, output, &writer_metrics))?;
        Ok(Self {
            sink: TelemetrySink { tx, metrics },
            writer: Mutex::new(Some(writer)),
        })
    }

    /// A sink for requests.
    pub fn sink(&self) -> TelemetrySink {
        self.sink.clone()
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.sink.metrics
    }

    /// Writes every queued record, then stops the writer.
    pub fn shutdown(&self) {
        let _ = self.sink.tx.send(Message::Stop);
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

/// How often the writer wakes to drain the queue. Requests never wake it:
/// a blocked receiver would cost every request a futex wake-up and a
/// context switch, which at low load is most of a request's CPU.
const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

fn run_writer(rx: Receiver<Message>, mut output: access_log::Output, metrics: &Metrics) {
    let mut line = Vec::with_capacity(512);
    loop {
        loop {
            match rx.try_recv() {
                Ok(Message::Record(record)) => {
                    metrics.observe(&record);
                    output.write(&record, &mut line);
                }
                Ok(Message::Stop) | Err(TryRecvError::Disconnected) => {
                    output.flush();
                    return;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        output.flush();
        std::thread::sleep(DRAIN_INTERVAL);
    }
}
