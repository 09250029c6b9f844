//! `HealthActor`: polls the health of running workers and reports each result to the master.
//!
//! One actor for every worker and probe kind, so probe scheduling lives in one place. Each
//! probe runs as its own future with its own timeout: a slow probe never delays another
//! worker's. A probe that times out counts as failed, never as passed.

use std::collections::HashMap;
use std::time::SystemTime;

use actix::prelude::*;

use crate::config::HealthCheckConfig;
use crate::error::error_chain;
use crate::worker::CheckHealth;
use crate::WorkerId;

/// How a worker's health is probed.
#[derive(Clone)]
pub enum Probe {
    /// Ask the worker actor (modules: `is_healthy`).
    Worker(Recipient<CheckHealth>),
}

/// Starts polling `id` (sent by the master when the worker becomes running). Replaces an
/// earlier watch of the same id.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WatchHealth {
    /// The worker.
    pub id: WorkerId,
    /// How to probe it.
    pub probe: Probe,
    /// Interval, timeout, threshold, initial delay.
    pub config: HealthCheckConfig,
}

/// Stops polling `id` (the worker left `running`). Results of probes in flight are dropped.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct UnwatchHealth(pub WorkerId);

/// Event: the result of one probe, sent to the master.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct HealthReport {
    /// The worker.
    pub id: WorkerId,
    /// The probe passed.
    pub healthy: bool,
    /// Failed probes in a row, this one included (0 when healthy).
    pub consecutive_failures: u32,
    /// The configured threshold, so the receiver can act on it.
    pub failure_threshold: u32,
    /// Why it failed.
    pub error: Option<String>,
    /// When the probe finished.
    pub at: SystemTime,
}

struct Watch {
    /// Distinguishes this watch from earlier ones of the same id.
    token: u64,
    probe: Probe,
    config: HealthCheckConfig,
    consecutive_failures: u32,
}

/// Schedules and runs probes.
pub struct HealthActor {
    watched: HashMap<WorkerId, Watch>,
    next_token: u64,
    /// Where results go: the master.
    reports: Recipient<HealthReport>,
}

impl HealthActor {
    /// A health actor reporting to `reports`.
    pub fn new(reports: Recipient<HealthReport>) -> Self {
        Self {
            watched: HashMap::new(),
            next_token: 0,
            reports,
        }
    }

    fn probe(&mut self, id: WorkerId, token: u64, ctx: &mut Context<Self>) {
        let Some(watch) = self.watched.get(&id).filter(|w| w.token == token) else {
            return;
        };
        let timeout = watch.config.timeout;
        let probing = match &watch.probe {
            Probe::Worker(worker) => {
                let sent = worker.send(CheckHealth { timeout });
                async move {
                    // The worker enforces `timeout`; ours is a backstop if its mailbox is stuck.
                    match tokio::time::timeout(timeout * 2, sent).await {
                        Err(_) => Err(format!("no answer within {timeout:?}")),
                        Ok(Err(e)) => Err(format!("worker did not answer: {e}")),
                        Ok(Ok(Err(e))) => Err(error_chain(&e)),
                        Ok(Ok(Ok(false))) => Err("is_healthy returned false".to_string()),
                        Ok(Ok(Ok(true))) => Ok(()),
                    }
                }
            }
        };
        ctx.spawn(probing.into_actor(self).map(move |result, act, ctx| {
            let Some(watch) = act.watched.get_mut(&id).filter(|w| w.token == token) else {
                return;
            };
            match &result {
                Ok(()) => watch.consecutive_failures = 0,
                Err(_) => watch.consecutive_failures += 1,
            }
            act.reports.do_send(HealthReport {
                id: id.clone(),
                healthy: result.is_ok(),
                consecutive_failures: watch.consecutive_failures,
                failure_threshold: watch.config.failure_threshold,
                error: result.err(),
                at: SystemTime::now(),
            });
            let interval = watch.config.interval;
            ctx.run_later(interval, move |act, ctx| act.probe(id, token, ctx));
        }));
    }
}

impl Actor for HealthActor {
    type Context = Context<Self>;
}

impl Handler<WatchHealth> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: WatchHealth, ctx: &mut Context<Self>) {
        self.next_token += 1;
        let token = self.next_token;
        let delay = msg.config.initial_delay;
        let id = msg.id.clone();
        self.watched.insert(
            msg.id,
            Watch {
                token,
                probe: msg.probe,
                config: msg.config,
                consecutive_failures: 0,
            },
        );
        ctx.run_later(delay, move |act, ctx| act.probe(id, token, ctx));
    }
}

impl Handler<UnwatchHealth> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: UnwatchHealth, _: &mut Context<Self>) {
        self.watched.remove(&msg.0);
    }
}
