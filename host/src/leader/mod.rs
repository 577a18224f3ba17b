//! Leader election on a `coordination.k8s.io/v1` Lease, so several replicas are safe: only the
//! holder runs the controllers.
//!
//! Guarantees, with client-go's timing (lease 15 s, renew deadline 10 s, retry 2 s):
//! - a standby takes the lease once it has seen no renewal for the lease duration (by its own
//!   clock, see [`decide`]), or at once when the leader released it;
//! - a leader that has not renewed within its renew deadline — counted from when it *sent*
//!   its last successful renewal, so never later than the standby's count starts — cancels the
//!   controllers and every reconcile in flight and ends [`run`] with [`LeaderError::Lost`]
//!   (`plugboard run` then exits, which also stops WebAssembly calls running on threads of
//!   their own). So it has stopped before anyone else may start, and no hook runs twice
//!   because of a failover;
//! - on shutdown the leader lets reconciles in flight finish (up to the grace period), still
//!   renewing, then releases the lease so a standby takes over at once.
//!
//! Writes use optimistic concurrency: a replace carries the `resourceVersion` read, so of two
//! candidates racing for a free lease exactly one succeeds.

pub mod decide;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource as _};

pub use decide::Timing;
use decide::{Decision, Observation};

use crate::health::{Health, Role};

/// Why leading ended without a shutdown.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The lease could not be renewed within the renew deadline (or another holder has it).
    #[error(
        "lost the lease {namespace}/{name}: not renewed within the renew deadline; the controllers were stopped"
    )]
    Lost {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
    },
    /// The controllers stopped by themselves.
    #[error("the controllers stopped")]
    Controllers(#[source] crate::controller::Error),
    /// The controllers' task failed.
    #[error("the controllers' task failed: {0}")]
    Task(String),
}

/// Which Lease, who we are, and its timing.
#[derive(Debug, Clone)]
pub struct Election {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This process's identity, written as the holder (unique per replica).
    pub identity: String,
    /// Lease duration, renew deadline, retry period.
    pub timing: Timing,
}

/// A candidate for the Lease: reads it and claims it.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    election: Election,
    observed: Option<Observation>,
    /// The Lease as last written by this process.
    written: Option<Lease>,
}

impl Elector {
    /// A candidate for `election`'s Lease.
    pub fn new(client: Client, election: Election) -> Self {
        Self {
            api: Api::namespaced(client, &election.namespace),
            election,
            observed: None,
            written: None,
        }
    }

    /// Acquires or renews the lease: `true` when this process holds it now. Losing a race
    /// (another candidate wrote first) is `false`, not an error.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = Instant::now();
        let current = self.api.get_opt(&self.election.name).await?;
        let me = self.election.identity.clone();
        let duration = self.election.timing.lease_duration;
        let decision = decide::decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &mut self.observed,
            &me,
            now,
            duration,
        );
        let wall = MicroTime(Timestamp::now());
        let written = match decision {
            Decision::Wait => return Ok(false),
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.election.name.clone()),
                        namespace: Some(self.election.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(decide::claimed(None, &me, &wall, duration, true)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Decision::Claim { acquire } => {
                let Some(mut lease) = current else {
                    return Ok(false);
                };
                lease.spec = Some(decide::claimed(
                    lease.spec.as_ref(),
                    &me,
                    &wall,
                    duration,
                    acquire,
                ));
                // `lease.metadata.resourceVersion` is the one read: a concurrent write wins
                // and this one fails with a conflict.
                self.api
                    .replace(&self.election.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(lease) => {
                self.observed = lease.spec.clone().map(|spec| Observation { spec, at: now });
                self.written = Some(lease);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(lease = %self.election.name, "another candidate wrote the lease first");
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    /// Records a Normal `LeaderElection` Event on the Lease saying this process leads now
    /// (best effort, as client-go does).
    pub async fn announce(&self, client: Client) {
        let Some(lease) = &self.written else {
            return;
        };
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: "plugboard".into(),
                instance: Some(self.election.identity.clone()),
            },
        );
        let event = Event {
            type_: EventType::Normal,
            reason: "LeaderElection".into(),
            note: Some(format!("{} became leader", self.election.identity)),
            action: "Lead".into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &lease.object_ref(&())).await {
            tracing::debug!(%error, "failed to record the leader election Event");
        }
    }

    /// Gives the lease up if this process holds it.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.election.name).await? else {
            return Ok(());
        };
        let wall = MicroTime(Timestamp::now());
        let Some(spec) = lease
            .spec
            .as_ref()
            .and_then(|s| decide::released(s, &self.election.identity, &wall))
        else {
            return Ok(());
        };
        lease.spec = Some(spec);
        self.api
            .replace(&self.election.name, &PostParams::default(), &lease)
            .await?;
        self.observed = None;
        Ok(())
    }
}

/// Starts the controllers; they stop gracefully when the future they are given completes.
pub type StartControllers = Box<
    dyn FnOnce(
            Box<dyn Future<Output = ()> + Send + Sync + Unpin>,
        ) -> tokio::task::JoinHandle<Result<(), crate::controller::Error>>
        + Send,
>;

/// How leading ended.
enum Ended {
    /// The controllers stopped (by themselves, or after a shutdown).
    Finished(Result<Result<(), crate::controller::Error>, tokio::task::JoinError>),
    /// The grace period ran out and the controllers were cut.
    Cut,
    /// The renew deadline passed.
    Lost,
}

/// Runs the controllers while this process holds the lease, until `shutdown` completes (then
/// `Ok`, the lease released) or the lease is lost ([`LeaderError::Lost`], controllers and
/// reconciles in flight already cancelled).
pub async fn run(
    client: Client,
    election: Election,
    health: Arc<Health>,
    grace: Duration,
    start: StartControllers,
    shutdown: impl Future<Output = ()>,
) -> Result<(), LeaderError> {
    let timing = election.timing;
    let mut elector = Elector::new(client.clone(), election.clone());
    let mut shutdown = std::pin::pin!(shutdown);
    health.set_role(Role::Standby);
    tracing::info!(
        lease = %election.name,
        namespace = %election.namespace,
        identity = %election.identity,
        "standing by for the lease"
    );
    // Standby: try at once, then every retry period (jittered, so replicas spread out).
    let mut next_try = tokio::time::Instant::now();
    let mut renewed = loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep_until(next_try) => {}
        }
        next_try = tokio::time::Instant::now() + jittered(timing.retry_period);
        let sent = Instant::now();
        match tokio::time::timeout(timing.retry_period, elector.try_acquire_or_renew()).await {
            Ok(Ok(true)) => break sent,
            Ok(Ok(false)) => {}
            Ok(Err(error)) => tracing::debug!(%error, "cannot read or claim the lease yet"),
            Err(_) => tracing::debug!("claiming the lease timed out"),
        }
    };
    health.set_role(Role::Leader);
    tracing::info!(identity = %election.identity, "acquired the lease; starting the controllers");
    tokio::spawn({
        let announced = Elector {
            api: elector.api.clone(),
            election: election.clone(),
            observed: None,
            written: elector.written.clone(),
        };
        async move { announced.announce(client).await }
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = Box::pin(async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|stop| *stop).await;
    });
    let mut controllers = start(Box::new(stopped));
    let mut grace_until: Option<tokio::time::Instant> = None;
    let ended = loop {
        let lost_at = tokio::time::Instant::from_std(renewed + timing.renew_deadline);
        let far = tokio::time::Instant::now() + Duration::from_secs(86400);
        tokio::select! {
            biased;
            result = &mut controllers => break Ended::Finished(result),
            () = tokio::time::sleep_until(lost_at) => break Ended::Lost,
            () = &mut shutdown, if grace_until.is_none() => {
                tracing::info!(grace_seconds = grace.as_secs(), "shutting down: letting reconciles in flight finish");
                let _ = stop_tx.send(true);
                grace_until = Some(tokio::time::Instant::now() + grace);
            }
            () = tokio::time::sleep_until(grace_until.unwrap_or(far)), if grace_until.is_some() => {
                break Ended::Cut;
            }
            () = tokio::time::sleep(timing.retry_period) => {
                let sent = Instant::now();
                if decide::renew_deadline_passed(renewed, sent, &timing) {
                    break Ended::Lost;
                }
                let left = (renewed + timing.renew_deadline).saturating_duration_since(sent);
                match tokio::time::timeout(left, elector.try_acquire_or_renew()).await {
                    Ok(Ok(true)) => renewed = sent,
                    // Someone else holds it now: we lost it.
                    Ok(Ok(false)) => break Ended::Lost,
                    Ok(Err(error)) => tracing::warn!(%error, "failed to renew the lease; retrying until the renew deadline"),
                    Err(_) => {}
                }
            }
        }
    };
    match ended {
        Ended::Lost => {
            controllers.abort();
            let _ = controllers.await;
            health.set_role(Role::Standby);
            tracing::error!(
                lease = %election.name,
                "lost the lease: controllers and reconciles in flight cancelled"
            );
            Err(LeaderError::Lost {
                namespace: election.namespace,
                name: election.name,
            })
        }
        Ended::Cut => {
            controllers.abort();
            let _ = controllers.await;
            tracing::warn!(
                grace_seconds = grace.as_secs(),
                "reconciles still in flight after the grace period were cut"
            );
            release(&mut elector, &health, &timing).await;
            Ok(())
        }
        Ended::Finished(result) => {
            release(&mut elector, &health, &timing).await;
            match result {
                Ok(Ok(())) if grace_until.is_some() => Ok(()),
                Ok(Ok(())) => Err(LeaderError::Task("ended without a shutdown".into())),
                Ok(Err(error)) => Err(LeaderError::Controllers(error)),
                Err(error) => Err(LeaderError::Task(error.to_string())),
            }
        }
    }
}

/// Releases the lease after the controllers have stopped, within one renew deadline.
async fn release(elector: &mut Elector, health: &Health, timing: &Timing) {
    health.set_role(Role::Standby);
    match tokio::time::timeout(timing.renew_deadline, elector.release()).await {
        Ok(Ok(())) => tracing::info!("released the lease"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "failed to release the lease; a standby takes over when it expires")
        }
        Err(_) => {
            tracing::warn!("releasing the lease timed out; a standby takes over when it expires")
        }
    }
}

/// `period` plus up to 20% (client-go's jitter factor is 1.2).
fn jittered(period: Duration) -> Duration {
    let mut bytes = [0u8; 2];
    // Jitter only: a failed read just means no spread.
    let _ = getrandom::fill(&mut bytes);
    let fraction = f64::from(u16::from_le_bytes(bytes)) / f64::from(u16::MAX);
    period.mul_f64(1.0 + 0.2 * fraction)
}
