//! Starting the workers of a config at launch: each as soon as it is added, but no more than
//! [`WINDOW`] at a time of those that depend on nothing.
//!
//! Workers are added far faster than they can be spawned (a spawn is ~0.6 ms of CPU on this
//! project's 2-core machine, an add a few µs), so starting every one at once put several
//! hundred starts in flight at the same time: each with its request, the master's and the
//! worker actor's futures, its spawn request. Freed once the workers ran, those left holes in
//! glibc's arenas between the workers' long-lived state that nothing later filled: 2.2 MB of
//! the main arena was free in pieces of exactly those sizes at 1,000 workers (`malloc_info`).
//! With a window the same few slots are reused, and the anonymous memory at 1,000 workers went
//! from ~11 to ~9.5 MB; the spawner threads still always have work queued.
//!
//! A start that can wait (a worker with `depends_on:`, which waits for its dependencies, and a
//! group, which starts its members in order) never takes a slot: a window full of starts
//! waiting for workers queued behind them would never empty. A start that takes a slot longer
//! than [`HOLD`] (a module whose `start` is slow, say) goes on outside the window.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use actix::Addr;
use futures::future::Either;
use futures::StreamExt as _;
use hsu::{MasterActor, StartWorker, WorkerId};
use tokio::sync::mpsc;

/// Starts of workers that depend on nothing, in flight at once.
pub const WINDOW: usize = 64;
/// How long a start may keep its slot.
pub const HOLD: Duration = Duration::from_millis(50);

type Handles = Rc<RefCell<Vec<tokio::task::JoinHandle<()>>>>;

/// The starts of one launch.
pub struct Launcher {
    master: Addr<MasterActor>,
    window: mpsc::UnboundedSender<WorkerId>,
    feeder: tokio::task::JoinHandle<()>,
    /// Starts outside the window: those that can wait, and those that outlived [`HOLD`].
    outside: Handles,
}

impl Launcher {
    /// A launcher for `master`, on the current (actix) runtime.
    pub fn new(master: Addr<MasterActor>) -> Self {
        let (window, queued) = mpsc::unbounded_channel::<WorkerId>();
        let outside: Handles = Rc::default();
        let feeder = {
            let (master, outside) = (master.clone(), outside.clone());
            actix_rt::spawn(async move {
                futures::stream::unfold(queued, |mut rx| async move {
                    rx.recv().await.map(|id| (id, rx))
                })
                .map(|id| held(&master, &outside, id))
                .buffer_unordered(WINDOW)
                .for_each(|()| async {})
                .await;
            })
        };
        Self {
            master,
            window,
            feeder,
            outside,
        }
    }

    /// Starts `id` (answered whenever the start is done; a failure is logged). `can_wait`: a
    /// start that may wait for other workers (`depends_on:`, a group), outside the window.
    pub fn start(&self, id: WorkerId, can_wait: bool) {
        if can_wait {
            let request = self.master.send(StartWorker(id.clone()));
            self.outside
                .borrow_mut()
                .push(actix_rt::spawn(async move { report(&id, request.await) }));
        } else if let Err(mpsc::error::SendError(id)) = self.window.send(id) {
            // The feeder has gone (it cannot, while `self` lives): start it all the same.
            self.start(id, true);
        }
    }

    /// Every start handed in: resolves once each has been answered.
    pub async fn finish(self) {
        drop(self.window);
        let _ = self.feeder.await;
        // No more are added now: the feeder was the only other one adding.
        let outside = std::mem::take(&mut *self.outside.borrow_mut());
        futures::future::join_all(outside).await;
    }
}

/// One start in the window: answered within [`HOLD`], or moved outside it.
async fn held(master: &Addr<MasterActor>, outside: &Handles, id: WorkerId) {
    let request = Box::pin(master.send(StartWorker(id.clone())));
    match futures::future::select(request, Box::pin(tokio::time::sleep(HOLD))).await {
        Either::Left((reply, _)) => report(&id, reply),
        Either::Right(((), request)) => outside
            .borrow_mut()
            .push(actix_rt::spawn(async move { report(&id, request.await) })),
    }
}

fn report(id: &WorkerId, reply: Result<Result<(), hsu::MasterError>, actix::MailboxError>) {
    if let Ok(Err(e)) = reply {
        tracing::error!(worker = %id, error = %hsu::error_chain(&e), "start failed");
    }
}
