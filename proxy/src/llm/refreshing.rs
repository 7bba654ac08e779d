//! A credential the gateway fetches for itself (a Vertex AI access token,
//! AWS credentials): kept in an `ArcSwap` so each request reads the current
//! one without a lock; fetched by one request at a time when none is valid
//! (the first request, or after failures); after a failure, requests get
//! the same error for [`RETRY_AFTER`] instead of hammering the source; and
//! refreshed by a background task, owned by the cache, before it goes
//! stale. Knows nothing of what is fetched or how: see [`Fetch`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio_util::sync::CancellationToken;

use crate::upstream::Pool;

/// A fetch that takes longer than this fails.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed fetch, requests get the same error this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long the refresher sleeps when nothing expires.
const IDLE_NAP: Duration = Duration::from_secs(3600);

/// A fetched credential and its schedule.
pub struct Fresh<V> {
    /// What requests get.
    pub value: V,
    /// Requests stop using it then (`None`: it does not expire).
    pub use_until: Option<Instant>,
    /// The refresher fetches a new one then (`None`: never).
    pub refresh_at: Option<Instant>,
}

/// How a credential is fetched.
pub trait Fetch: Send + Sync + 'static {
    /// What requests get (a header, a signer).
    type Value: Clone + Send + Sync + 'static;
    /// Why none could be had; never quotes a secret.
    type Error: Clone + std::fmt::Display + Send + Sync + 'static;

    /// Fetches a fresh credential.
    fn fetch(
        &self,
        pool: &Arc<Pool>,
    ) -> impl Future<Output = Result<Fresh<Self::Value>, Self::Error>> + Send;

    /// The error when no answer came within [`FETCH_TIMEOUT`].
    fn timed_out(&self) -> Self::Error;

    /// Whose credential this is, for the logs (an account, a region).
    fn owner(&self) -> &str;
}

/// The cached credential of one source.
pub struct Refreshing<F: Fetch> {
    source: F,
    current: ArcSwapOption<Fresh<F::Value>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    last_failure: Mutex<Option<(Instant, F::Error)>>,
    refresher_started: AtomicBool,
    /// Stops the refresher when the cache is dropped (a config reload).
    stop: CancellationToken,
}

impl<F: Fetch + std::fmt::Debug> std::fmt::Debug for Refreshing<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.source.fmt(f)
    }
}

impl<F: Fetch> Drop for Refreshing<F> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl<F: Fetch> Refreshing<F> {
    /// A cache for `source`; nothing is fetched until a request asks.
    pub fn new(source: F) -> Self {
        Self {
            source,
            current: ArcSwapOption::empty(),
            fetching: tokio::sync::Mutex::new(()),
            last_failure: Mutex::new(None),
            refresher_started: AtomicBool::new(false),
            stop: CancellationToken::new(),
        }
    }

    /// The credential for the next request: the cached one, or a fresh one
    /// when none is valid.
    pub async fn get(self: &Arc<Self>, pool: &Arc<Pool>) -> Result<F::Value, F::Error> {
        if let Some(value) = self.valid() {
            return Ok(value);
        }
        let _fetching = self.fetching.lock().await;
        // Another request may have fetched meanwhile.
        if let Some(value) = self.valid() {
            return Ok(value);
        }
        if let Some((_, error)) = self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < RETRY_AFTER)
        {
            return Err(error.clone());
        }
        let value = self.refresh(pool).await?;
        self.start_refresher(pool);
        Ok(value)
    }

    fn valid(&self) -> Option<F::Value> {
        let current = self.current.load();
        let current = current.as_ref()?;
        match current.use_until {
            Some(until) if Instant::now() >= until => None,
            _ => Some(current.value.clone()),
        }
    }

    /// Fetches a credential and keeps it (or the failure).
    async fn refresh(&self, pool: &Arc<Pool>) -> Result<F::Value, F::Error> {
        let result = match tokio::time::timeout(FETCH_TIMEOUT, self.source.fetch(pool)).await {
            Ok(result) => result,
            Err(_) => Err(self.source.timed_out()),
        };
        let mut failure = self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(fresh) => {
                *failure = None;
                let value = fresh.value.clone();
                self.current.store(Some(Arc::new(fresh)));
                Ok(value)
            }
            Err(error) => {
                tracing::warn!(owner = %self.source.owner(), %error, "credential fetch failed");
                *failure = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    /// Starts, once, the task that refreshes the credential before it goes
    /// stale. It holds the cache weakly and ends when the cache is dropped.
    fn start_refresher(self: &Arc<Self>, pool: &Arc<Pool>) {
        if self.refresher_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let pool = pool.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                let wait = match weak.upgrade() {
                    None => return,
                    Some(cache) => cache.next_refresh_in(),
                };
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                let Some(cache) = weak.upgrade() else {
                    return;
                };
                let _fetching = cache.fetching.lock().await;
                if cache.next_refresh_in() <= Duration::from_millis(10) {
                    let _ = cache.refresh(&pool).await;
                }
            }
        });
    }

    /// How long until the credential should be refreshed (at least
    /// [`RETRY_AFTER`] after a failure; an hour's nap when it never
    /// expires).
    fn next_refresh_in(&self) -> Duration {
        let failed_recently = self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < RETRY_AFTER);
        if failed_recently {
            return RETRY_AFTER;
        }
        match self.current.load().as_ref() {
            None => Duration::ZERO,
            Some(current) => match current.refresh_at {
                None => IDLE_NAP,
                Some(at) => at.saturating_duration_since(Instant::now()),
            },
        }
    }
}
