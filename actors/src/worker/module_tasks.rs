//! The tasks a module spawns through [`ModuleContext::spawn`](hsu_module::ModuleContext::spawn):
//! run on the worker runtime behind `catch_unwind`, kept per run so a stop can wait for them
//! (and abort them at its deadline), and reported to the worker actor when they end.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use actix::prelude::*;
use futures::FutureExt;
use hsu_module::{TaskFuture, TaskSpawner};
use tokio::task::JoinHandle;

use crate::error::error_chain;
use crate::runtime::{panic_message, WorkerRuntime};

/// Event: a task the module spawned has ended. Sent by the task's wrapper on the worker runtime.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(super) struct TaskEnded {
    pub generation: u64,
    pub name: String,
    /// `None` when the task returned `Ok`.
    pub error: Option<String>,
    /// It panicked.
    pub panicked: bool,
}

/// The tasks of one run. `None` once closed: a task spawned after the run ended is aborted.
#[derive(Default)]
pub(super) struct TaskSet {
    handles: StdMutex<Option<Vec<JoinHandle<()>>>>,
    closed: std::sync::atomic::AtomicBool,
}

impl TaskSet {
    pub fn push(&self, handle: JoinHandle<()>) {
        let mut guard = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            handle.abort();
            return;
        }
        let handles = guard.get_or_insert_with(Vec::new);
        handles.retain(|h| !h.is_finished());
        handles.push(handle);
    }

    /// Tasks still running.
    pub fn live(&self) -> usize {
        let guard = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .map_or(0, |h| h.iter().filter(|t| !t.is_finished()).count())
    }

    fn take(&self) -> Vec<JoinHandle<()>> {
        let mut guard = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        guard.take().unwrap_or_default()
    }

    /// Waits up to `limit` for every task, then aborts those still running.
    pub async fn join(&self, limit: Duration) {
        let mut handles = self.take();
        let all = futures::future::join_all(handles.iter_mut());
        if tokio::time::timeout(limit, all).await.is_err() {
            for h in &handles {
                h.abort();
            }
        }
    }

    pub fn abort_all(&self) {
        for h in self.take() {
            h.abort();
        }
    }
}

/// The host side of [`ModuleContext::spawn`]: runs a module task on the worker runtime behind
/// `catch_unwind` and tells the worker how it ended.
pub(super) struct HostSpawner {
    pub runtime: WorkerRuntime,
    pub worker: Recipient<TaskEnded>,
    pub generation: u64,
    pub tasks: Arc<TaskSet>,
}

impl TaskSpawner for HostSpawner {
    fn spawn(&self, name: String, task: TaskFuture) {
        let worker = self.worker.clone();
        let generation = self.generation;
        let handle = self.runtime.handle().spawn(async move {
            let (error, panicked) = match AssertUnwindSafe(task).catch_unwind().await {
                Ok(Ok(())) => (None, false),
                Ok(Err(e)) => (
                    Some(format!("task `{name}` failed: {}", error_chain(&e))),
                    false,
                ),
                Err(panic) => (
                    Some(format!("task `{name}` panicked: {}", panic_message(panic))),
                    true,
                ),
            };
            worker.do_send(TaskEnded {
                generation,
                name,
                error,
                panicked,
            });
        });
        self.tasks.push(handle);
    }
}
