//! AWS credentials of a Bedrock backend: the keys of the config, or those
//! the standard credential chain (see [`chain`]) hands out, cached as a
//! ready [`Signer`] in an `ArcSwap` so each request takes the current one
//! without a lock. Temporary credentials are refreshed by a background task
//! owned by the source [`REFRESH_EARLY`] before they expire (half their
//! lifetime when that is shorter), so requests wait for a fetch only when
//! none is valid (the first request, or after failures). One fetch at a
//! time; after a failure, requests get the same error for [`RETRY_AFTER`]
//! instead of hammering the source. Never logs a secret key or a token (the
//! access key id, which every signature carries, is logged).
//! Knows nothing of requests or routing: the caller signs.

mod chain;
mod parse;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use sluice_crds::snapshot::AwsCredentials;
use tokio_util::sync::CancellationToken;

pub use chain::Environment;

use crate::llm::sigv4::Signer;
use crate::upstream::Pool;

/// Temporary credentials are refreshed this long before they expire (or
/// after half their lifetime, when that comes first).
pub const REFRESH_EARLY: Duration = Duration::from_secs(300);
/// Requests do not use credentials this close to their expiry (or a
/// quarter of their lifetime, when that is shorter).
const MARGIN: Duration = Duration::from_secs(30);
/// Longest wait for a credentials fetch, connections included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed fetch, how long requests get its error without a new try.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Fetches are at least this far apart, whatever the expiry says.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// The signing service of Bedrock.
const SERVICE: &str = "bedrock";

/// Why no credentials could be had. Never quotes a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not get AWS credentials: {0}")]
pub struct CredentialsError(pub String);

/// How a Bedrock backend's requests get signed.
#[derive(Debug)]
pub enum Signing {
    /// Keys from the config: one signer for the config's lifetime.
    Keys(Arc<Signer>),
    /// The standard credential chain.
    Chain(Arc<CredentialChain>),
}

impl Signing {
    /// The signer for the next request.
    pub async fn signer(&self, pool: &Arc<Pool>) -> Result<Arc<Signer>, CredentialsError> {
        match self {
            Self::Keys(signer) => Ok(signer.clone()),
            Self::Chain(chain) => chain.signer(pool).await,
        }
    }
}

/// A signer and how long it may be used.
struct Current {
    signer: Arc<Signer>,
    /// Requests stop using it then (`None`: long-term keys).
    use_until: Option<Instant>,
    /// The refresher fetches new ones then (`None`: never).
    refresh_at: Option<Instant>,
}

struct Failure {
    at: Instant,
    error: CredentialsError,
}

/// The credentials of one backend from the standard chain.
pub struct CredentialChain {
    region: String,
    env: Environment,
    current: ArcSwapOption<Current>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    last_failure: Mutex<Option<Failure>>,
    refresher_started: AtomicBool,
    /// Stops the refresher when the chain is dropped (a config reload).
    stop: CancellationToken,
}

impl std::fmt::Debug for CredentialChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialChain")
            .field("region", &self.region)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl Drop for CredentialChain {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl CredentialChain {
    /// A chain for signing in `region` with the settings of `env`; nothing
    /// is fetched until a request needs credentials.
    pub fn new(region: &str, env: Environment) -> Self {
        Self {
            region: region.to_owned(),
            env,
            current: ArcSwapOption::empty(),
            fetching: tokio::sync::Mutex::new(()),
            last_failure: Mutex::new(None),
            refresher_started: AtomicBool::new(false),
            stop: CancellationToken::new(),
        }
    }

    /// The signer for the next request: the cached one, or fresh
    /// credentials when none are valid.
    pub async fn signer(
        self: &Arc<Self>,
        pool: &Arc<Pool>,
    ) -> Result<Arc<Signer>, CredentialsError> {
        if let Some(signer) = self.valid() {
            return Ok(signer);
        }
        let _fetching = self.fetching.lock().await;
        // Another request may have fetched meanwhile.
        if let Some(signer) = self.valid() {
            return Ok(signer);
        }
        if let Some(failure) = self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|f| f.at.elapsed() < RETRY_AFTER)
        {
            return Err(failure.error.clone());
        }
        let signer = self.refresh(pool).await?;
        self.start_refresher(pool);
        Ok(signer)
    }

    fn valid(&self) -> Option<Arc<Signer>> {
        let current = self.current.load();
        let current = current.as_ref()?;
        match current.use_until {
            Some(until) if Instant::now() >= until => None,
            _ => Some(current.signer.clone()),
        }
    }

    /// Fetches credentials and keeps them (or the failure).
    async fn refresh(&self, pool: &Arc<Pool>) -> Result<Arc<Signer>, CredentialsError> {
        let result = match tokio::time::timeout(FETCH_TIMEOUT, self.fetch(pool)).await {
            Ok(result) => result,
            Err(_) => Err(CredentialsError(format!(
                "no answer within {}s",
                FETCH_TIMEOUT.as_secs()
            ))),
        };
        let mut failure = self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(current) => {
                *failure = None;
                let signer = current.signer.clone();
                self.current.store(Some(Arc::new(current)));
                Ok(signer)
            }
            Err(error) => {
                tracing::warn!(region = %self.region, %error, "cannot get AWS credentials");
                *failure = Some(Failure {
                    at: Instant::now(),
                    error: error.clone(),
                });
                Err(error)
            }
        }
    }

    /// Runs the chain; builds the signer and its schedule.
    async fn fetch(&self, pool: &Arc<Pool>) -> Result<Current, CredentialsError> {
        let fetched = chain::fetch(&self.env, &self.region, pool)
            .await
            .map_err(CredentialsError)?;
        let issued = fetched.issued;
        let credentials = AwsCredentials {
            access_key_id: issued.access_key_id,
            secret_access_key: issued.secret_access_key,
            session_token: issued.session_token,
        };
        let signer = Signer::new(&credentials, &self.region, SERVICE)
            .map_err(|e| CredentialsError(format!("from the {}: {e}", fetched.source)))?;
        let now = Instant::now();
        let (use_until, refresh_at) = match issued.expiration {
            None => (None, None),
            Some(expiration) => {
                let left = (expiration - chrono::Utc::now())
                    .to_std()
                    .ok()
                    .filter(|left| !left.is_zero())
                    .ok_or_else(|| {
                        CredentialsError(format!(
                            "the {} handed out credentials that expired at {} (is the clock right?)",
                            fetched.source,
                            expiration.to_rfc3339()
                        ))
                    })?;
                let expires = now + left;
                (
                    Some(expires - MARGIN.min(left / 4)),
                    Some((expires - REFRESH_EARLY.min(left / 2)).max(now + MIN_REFRESH)),
                )
            }
        };
        tracing::debug!(
            region = %self.region,
            source = fetched.source,
            access_key_id = %credentials.access_key_id,
            expires_in_s = use_until.map(|u| u.saturating_duration_since(now).as_secs()),
            "fetched AWS credentials"
        );
        Ok(Current {
            signer: Arc::new(signer),
            use_until,
            refresh_at,
        })
    }

    /// Starts, once, the task that refreshes temporary credentials before
    /// they expire. It holds the chain weakly and ends when it is dropped.
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
                    Some(chain) => chain.next_refresh_in(),
                };
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                let Some(chain) = weak.upgrade() else {
                    return;
                };
                let _fetching = chain.fetching.lock().await;
                if chain.next_refresh_in() <= Duration::from_millis(10) {
                    let _ = chain.refresh(&pool).await;
                }
            }
        });
    }

    /// How long until the credentials should be refreshed (at least
    /// [`RETRY_AFTER`] after a failure; an hour's nap for long-term keys).
    fn next_refresh_in(&self) -> Duration {
        let failed_recently = self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|f| f.at.elapsed() < RETRY_AFTER);
        if failed_recently {
            return RETRY_AFTER;
        }
        match self.current.load().as_ref() {
            None => Duration::ZERO,
            Some(current) => match current.refresh_at {
                None => Duration::from_secs(3600),
                Some(at) => at.saturating_duration_since(Instant::now()),
            },
        }
    }
}
