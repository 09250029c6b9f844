//! `groups:`: supervision trees in Erlang/OTP's sense, over workers of any deployment.
//!
//! ```yaml
//! groups:
//!   - id: backend
//!     strategy: rest_for_one   # one_for_one (default) | one_for_all | rest_for_one
//!     max_restarts: 3          # the group's intensity: this many restarts …
//!     window: 10s              # … within this window, or the group fails as a unit
//!     members: [db, migrate, api, edge]   # workers or groups, in start order
//! ```
//!
//! A member's own `restart.policy` says whether its end counts (OTP's restart types): `always`
//! is permanent (any end is restarted), `on_failure` transient (only a failure), `never`
//! temporary (never restarted). The strategy says what is restarted: the member alone
//! (`one_for_one`), every member (`one_for_all`), or the member and those after it
//! (`rest_for_one`); stops go in reverse member order, starts in member order, and a temporary
//! sibling stopped along is not started again (as in OTP). More than
//! `max_restarts` restarts within `window` stop every member and fail the group; a nested
//! group's failure is a member failure of its parent (escalation). A top-level group that
//! fails stays failed with the reason, unless `on_exhausted: shutdown` stops the master.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use crate::WorkerId;

/// One entry of `groups:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// The group's id, in the same namespace as workers' (start, stop, restart take it).
    pub id: String,
    /// What a member's restart takes with it (default `one_for_one`).
    #[serde(default)]
    pub strategy: Strategy,
    /// Restarts allowed within `window` (default 3); one more fails the group.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// The intensity's window (default `10s`).
    #[serde(default = "default_window", with = "duration")]
    #[schemars(with = "super::schema::DurationText")]
    pub window: Duration,
    /// Top-level groups: what a failure of the whole group does (default `stay`: the group
    /// stays failed, the master and everything else keep running; `shutdown`: the master stops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_exhausted: Option<OnExhausted>,
    /// Worker or group ids, in start order; each belongs to one group at most.
    pub members: Vec<String>,
}

fn default_max_restarts() -> u32 {
    3
}

fn default_window() -> Duration {
    Duration::from_secs(10)
}

/// OTP's restart strategies.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the member that ended is restarted.
    #[default]
    OneForOne,
    /// Every member is stopped (reverse order) and started again (in order).
    OneForAll,
    /// The member that ended and every member after it.
    RestForOne,
}

/// What a top-level group's failure does.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    /// The group stays failed with the reason; the master keeps running.
    #[default]
    Stay,
    /// The master stops every worker and exits (non-zero for `hsu run`).
    Shutdown,
}

/// A validated group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    /// Its id.
    pub id: WorkerId,
    /// Its strategy.
    pub strategy: Strategy,
    /// Its intensity: restarts …
    pub max_restarts: u32,
    /// … within this window.
    pub window: Duration,
    /// Top level only.
    pub on_exhausted: OnExhausted,
    /// Members in start order.
    pub members: Vec<WorkerId>,
    /// The group it is a member of.
    pub parent: Option<WorkerId>,
}
