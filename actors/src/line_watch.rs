//! `log_line:` conditions: the patterns the master watches a worker's output for.
//!
//! Every line a worker's log sink writes (a process's stdout/stderr, a module's tracing events)
//! is checked against the patterns set for that worker, off the master's thread. A pattern is
//! reported to the master once per run: the worker re-arms its patterns when it begins a start
//! (before the new run can print), so a match is never taken from an earlier run and a chatty
//! worker costs one message per pattern and run. With no pattern set anywhere, a line costs
//! one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use actix::prelude::*;

use crate::config::LinePattern;
use crate::WorkerId;

/// Message to the master: a line of worker `id`'s current run matched `pattern`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub(crate) struct LineSeen {
    pub id: WorkerId,
    pub pattern: String,
}

struct Watch {
    patterns: Vec<(LinePattern, AtomicBool)>,
    to: Recipient<LineSeen>,
}

static ANY: AtomicBool = AtomicBool::new(false);

fn watches() -> &'static RwLock<HashMap<WorkerId, Arc<Watch>>> {
    static WATCHES: OnceLock<RwLock<HashMap<WorkerId, Arc<Watch>>>> = OnceLock::new();
    WATCHES.get_or_init(Default::default)
}

/// Watches worker `id`'s output for `patterns` (replacing what was set; none clears it).
/// Patterns already seen in the current run are not reported again.
pub(crate) fn set(id: &WorkerId, patterns: Vec<LinePattern>, to: Recipient<LineSeen>) {
    let mut all = watches().write().unwrap_or_else(|p| p.into_inner());
    let seen: Vec<String> = all
        .get(id)
        .map(|w| {
            w.patterns
                .iter()
                .filter(|(_, s)| s.load(Ordering::Relaxed))
                .map(|(p, _)| p.as_str().to_string())
                .collect()
        })
        .unwrap_or_default();
    if patterns.is_empty() {
        all.remove(id);
    } else {
        let patterns = patterns
            .into_iter()
            .map(|p| {
                let was = seen.iter().any(|s| s == p.as_str());
                (p, AtomicBool::new(was))
            })
            .collect();
        all.insert(id.clone(), Arc::new(Watch { patterns, to }));
    }
    ANY.store(!all.is_empty(), Ordering::Release);
}

/// A new run of `id` begins: each pattern may be reported again.
pub(crate) fn rearm(id: &WorkerId) {
    if !ANY.load(Ordering::Acquire) {
        return;
    }
    if let Some(w) = watches().read().unwrap_or_else(|p| p.into_inner()).get(id) {
        for (_, seen) in &w.patterns {
            seen.store(false, Ordering::Relaxed);
        }
    }
}

/// Checks lines written for `id`.
pub(crate) fn check(id: &WorkerId, lines: &[&[u8]]) {
    if !ANY.load(Ordering::Acquire) {
        return;
    }
    let Some(watch) = watches()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        .cloned()
    else {
        return;
    };
    for (pattern, seen) in &watch.patterns {
        if seen.load(Ordering::Relaxed) {
            continue;
        }
        if lines.iter().any(|line| pattern.is_match(line)) && !seen.swap(true, Ordering::AcqRel) {
            watch.to.do_send(LineSeen {
                id: id.clone(),
                pattern: pattern.as_str().to_string(),
            });
        }
    }
}
