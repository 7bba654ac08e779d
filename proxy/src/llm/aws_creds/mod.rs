//! AWS credentials of a Bedrock backend: the keys of the config, or those
//! the standard credential chain (see [`chain`]) hands out, cached as a
//! ready [`Signer`] by [`Refreshing`] (read without a lock, one fetch at a
//! time, failures repeated for a while). Temporary credentials are
//! refreshed [`REFRESH_EARLY`] before they expire (half their lifetime
//! when that is shorter). Never logs a secret key or a token (the
//! access key id, which every signature carries, is logged).
//! Knows nothing of requests or routing: the caller signs.

mod chain;
mod parse;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use sluice_crds::snapshot::AwsCredentials;

pub use chain::Environment;

use crate::llm::refreshing::{Fetch, Fresh, Refreshing, FETCH_TIMEOUT};
use crate::llm::sigv4::Signer;
use crate::upstream::Pool;

/// Temporary credentials are refreshed this long before they expire (or
/// after half their lifetime, when that comes first).
pub const REFRESH_EARLY: Duration = Duration::from_secs(300);
/// Requests do not use credentials this close to their expiry (or a
/// quarter of their lifetime, when that is shorter).
const MARGIN: Duration = Duration::from_secs(30);
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
            Self::Chain(chain) => chain.get(pool).await,
        }
    }
}

/// The credentials of one backend from the standard chain, cached and
/// refreshed ([`Refreshing`]); `get` gives the signer for the next request.
pub type CredentialChain = Refreshing<ChainSource>;

/// Where one backend's credentials come from: the chain, for a region.
pub struct ChainSource {
    region: String,
    env: Environment,
}

impl std::fmt::Debug for ChainSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialChain")
            .field("region", &self.region)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

/// The live chains, held weakly, by region: a chain lives while a loaded
/// config uses it, so a reload keeps its credentials and refresher (the
/// chain reads the process's environment, the same for every config).
/// Locked only when a config is loaded.
static CHAINS: LazyLock<Mutex<HashMap<String, Weak<CredentialChain>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl Refreshing<ChainSource> {
    /// The chain for `region` with the process's environment: the live
    /// one when a loaded config already uses it, else a new one.
    pub fn shared(region: &str) -> Arc<Self> {
        let mut chains = CHAINS.lock().unwrap_or_else(PoisonError::into_inner);
        chains.retain(|_, chain| chain.strong_count() > 0);
        if let Some(chain) = chains.get(region).and_then(Weak::upgrade) {
            return chain;
        }
        let chain = Arc::new(Refreshing::new(ChainSource::new(
            region,
            Environment::from_process(),
        )));
        chains.insert(region.to_owned(), Arc::downgrade(&chain));
        chain
    }
}

impl ChainSource {
    /// A chain for signing in `region` with the settings of `env`; nothing
    /// is fetched until a request needs credentials.
    pub fn new(region: &str, env: Environment) -> Self {
        Self {
            region: region.to_owned(),
            env,
        }
    }
}

impl Fetch for ChainSource {
    type Value = Arc<Signer>;
    type Error = CredentialsError;

    /// Runs the chain; builds the signer and its schedule.
    async fn fetch(&self, pool: &Arc<Pool>) -> Result<Fresh<Arc<Signer>>, CredentialsError> {
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
        Ok(Fresh {
            value: Arc::new(signer),
            use_until,
            refresh_at,
        })
    }

    fn timed_out(&self) -> CredentialsError {
        CredentialsError(format!("no answer within {}s", FETCH_TIMEOUT.as_secs()))
    }

    fn owner(&self) -> &str {
        &self.region
    }
}
