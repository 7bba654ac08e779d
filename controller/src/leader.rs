//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go
//! does it: the leader renews the Lease every `retry` and steps down when it
//! could not renew for `renew_deadline`; a standby takes the Lease when its
//! holder has not renewed it for `lease_duration`, measured on the standby's
//! own clock from when it last saw the record change (so clock skew between
//! nodes does not matter). Writes carry the `resourceVersion` they read, so
//! of two standbys racing for an expired Lease exactly one wins. The result
//! goes to [`Hub::set_leader`]; on shutdown the leader hands the Lease back.
//! The leader also keeps the config version it publishes in the Lease's
//! `sluice.dev/config-version` annotation, so its successor numbers on from
//! there rather than from 1.
//! kube-rs has no leader election of its own; this is ~150 lines rather
//! than another dependency pinned to a kube version.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// The Lease annotation that carries the last published config version.
pub const VERSION_ANNOTATION: &str = "sluice.dev/config-version";

/// Lease timing.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease is held without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps leading while renewals fail.
    pub renew_deadline: Duration,
    /// How often to renew or try to acquire.
    pub retry: Duration,
}

/// What to do with the Lease as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// It is ours: renew it.
    Renew,
    /// It is free or expired: take it.
    Acquire,
    /// Someone else holds it.
    Follow,
}

/// Decides from the Lease's holder and whether it expired.
pub fn decide(holder: Option<&str>, identity: &str, expired: bool) -> Decision {
    match holder {
        Some(h) if h == identity => Decision::Renew,
        None | Some("") => Decision::Acquire,
        Some(_) if expired => Decision::Acquire,
        Some(_) => Decision::Follow,
    }
}

/// The record a standby watches for change: holder and renew time.
type Record = (Option<String>, Option<String>);

fn record(spec: &LeaseSpec) -> Record {
    (
        spec.holder_identity.clone(),
        spec.renew_time.as_ref().map(|t| t.0.to_string()),
    )
}

struct Elector {
    api: Api<Lease>,
    hub: Arc<Hub>,
    settings: LeaseSettings,
    /// The record last seen and when it was first seen, on our clock.
    observed: Option<(Record, Instant)>,
}

impl Elector {
    /// One round: returns whether this replica holds the Lease now.
    async fn round(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration = i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.settings.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let seen = record(&spec);
        let since = match &self.observed {
            Some((previous, since)) if *previous == seen => *since,
            _ => {
                let since = Instant::now();
                self.observed = Some((seen, since));
                since
            }
        };
        let held_for = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.settings.lease_duration, Duration::from_secs);
        let expired = since.elapsed() > held_for;
        let decision = decide(
            spec.holder_identity.as_deref(),
            &self.settings.identity,
            expired,
        );
        let mut next = spec.clone();
        let annotations = lease
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        let earlier = annotations
            .get(VERSION_ANNOTATION)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        match decision {
            Decision::Follow => return Ok(false),
            Decision::Renew => next.renew_time = Some(now),
            Decision::Acquire => {
                next.holder_identity = Some(self.settings.identity.clone());
                next.acquire_time = Some(now.clone());
                next.renew_time = Some(now);
                next.lease_duration_seconds = Some(duration);
                next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        if decision == Decision::Acquire {
            self.hub.continue_from(earlier);
        }
        let published = self.hub.current().map_or(0, |p| p.bundle.version);
        annotations.insert(
            VERSION_ANNOTATION.to_owned(),
            published.max(earlier).to_string(),
        );
        lease.spec = Some(next);
        // `replace` sends the resourceVersion read above: a concurrent
        // writer makes it fail with 409 instead of both winning.
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                if decision == Decision::Acquire {
                    tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, "acquired the Lease: leading");
                }
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Hands the Lease back, so a standby takes over within a second.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.settings.name).await else {
            return;
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(&self.settings.identity) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.settings.name, "released the Lease"),
            Err(error) => {
                tracing::warn!(%error, "cannot release the Lease; a standby takes it when it expires")
            }
        }
    }
}

/// Runs the election until `shutdown`, keeping `hub`'s leadership current.
pub async fn run(
    client: Client,
    settings: LeaseSettings,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) {
    let retry = settings.retry;
    let renew_deadline = settings.renew_deadline;
    let mut elector = Elector {
        api: Api::namespaced(client, &settings.namespace),
        hub: hub.clone(),
        settings,
        observed: None,
    };
    let mut last_renewal: Option<Instant> = None;
    loop {
        match elector.round().await {
            Ok(true) => {
                last_renewal = Some(Instant::now());
                hub.set_leader(true);
            }
            Ok(false) => {
                if hub.is_leader() {
                    tracing::warn!("another replica holds the Lease: standing by");
                }
                last_renewal = None;
                hub.set_leader(false);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read or renew the Lease");
                if hub.is_leader() && last_renewal.is_none_or(|t| t.elapsed() > renew_deadline) {
                    tracing::warn!("could not renew the Lease in time: standing by");
                    hub.set_leader(false);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            () = shutdown.cancelled() => break,
        }
    }
    if hub.is_leader() {
        hub.set_leader(false);
        elector.release().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_renewed_by_its_holder_and_taken_only_when_free_or_expired() {
        assert_eq!(decide(Some("a"), "a", false), Decision::Renew);
        assert_eq!(decide(Some("a"), "a", true), Decision::Renew);
        assert_eq!(decide(None, "a", false), Decision::Acquire);
        assert_eq!(decide(Some(""), "a", false), Decision::Acquire);
        assert_eq!(decide(Some("b"), "a", false), Decision::Follow);
        assert_eq!(decide(Some("b"), "a", true), Decision::Acquire);
    }
}
