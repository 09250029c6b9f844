//! `GET /v1/events`: every `WorkerStateChanged`, in order, as server-sent events.
//!
//! One subscription to the master feeds a hub that numbers the events (`id:`), keeps the last
//! [`HISTORY`] of them, and fans them out. A client that reconnects with `Last-Event-ID: N`
//! gets every event after N that is still kept. Nothing is ever skipped silently: a client
//! that asks for events no longer kept, or that reads too slowly to keep up with the live
//! stream, gets an `event: missed` whose data says how many it missed, then the stream goes on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use actix_web::web::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use hsu_actors::WorkerStateChanged;

/// Events kept for resuming clients.
pub const HISTORY: usize = 10_000;
/// A comment line this often keeps idle connections (and their proxies) alive and finds dead
/// clients.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// One event as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventBody {
    /// Its number: increasing by one per event, from 1.
    pub seq: u64,
    /// The worker.
    pub worker: String,
    /// The state before.
    pub from: String,
    /// The state now.
    pub to: String,
    /// Why (failures).
    pub reason: Option<String>,
    /// The process that became running.
    pub pid: Option<u32>,
    /// Module code panicked.
    pub panicked: bool,
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

type Numbered = (u64, Arc<str>);

/// The numbered history and the live fan-out.
pub struct EventHub {
    history: Mutex<VecDeque<Numbered>>,
    /// Made for the first subscriber: the channel's `lag` slots (4,096 by default, ~200 KB)
    /// are allocated and written when it is made, which a master nobody follows need not pay.
    /// Events before it are in the history, which every subscriber reads after subscribing.
    live: std::sync::OnceLock<broadcast::Sender<Numbered>>,
    lag: usize,
    /// The number of the newest event: anything cached from before it may be stale.
    newest: std::sync::atomic::AtomicU64,
}

impl EventHub {
    /// A hub fed by `events` (a master subscription), on a task of the current runtime. A
    /// live subscriber may fall `lag` events behind before it is told it missed some.
    pub fn start(
        mut events: mpsc::UnboundedReceiver<WorkerStateChanged>,
        lag: usize,
    ) -> Arc<EventHub> {
        let hub = Arc::new(EventHub {
            history: Mutex::new(VecDeque::with_capacity(1024)),
            live: std::sync::OnceLock::new(),
            lag: lag.max(1),
            newest: std::sync::atomic::AtomicU64::new(0),
        });
        let feeding = hub.clone();
        actix_rt::spawn(async move {
            let mut seq = 0u64;
            while let Some(event) = events.recv().await {
                seq += 1;
                let body = EventBody {
                    seq,
                    worker: event.id.to_string(),
                    from: event.from.to_string(),
                    to: event.to.to_string(),
                    reason: event.reason,
                    pid: event.pid,
                    panicked: event.panicked,
                    at_unix_ms: event
                        .at
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or_default(),
                };
                let json: Arc<str> = serde_json::to_string(&body).unwrap_or_default().into();
                {
                    let mut history = feeding.lock();
                    if history.len() == HISTORY {
                        history.pop_front();
                    }
                    history.push_back((seq, json.clone()));
                }
                feeding
                    .newest
                    .store(seq, std::sync::atomic::Ordering::SeqCst);
                // No receiver (or no channel yet) is fine: the history keeps it, and it was
                // pushed there before this looks for the channel.
                if let Some(live) = feeding.live.get() {
                    let _ = live.send((seq, json));
                }
            }
        });
        hub
    }

    /// The number of the newest event so far (0 before the first).
    pub fn newest(&self) -> u64 {
        self.newest.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Numbered>> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A stream of SSE frames: the kept events after `last_seen` (all kept ones when none),
    /// then the live ones; with `live_only`, only events from now on. A `last_seen` beyond
    /// the newest event comes from another run of the master (numbers start at 1 each run):
    /// every kept event is news to that client, so all are sent.
    pub fn stream(
        &self,
        last_seen: Option<u64>,
        live_only: bool,
    ) -> impl futures::Stream<Item = Result<Bytes, actix_web::Error>> + 'static {
        // Subscribe before reading the history, so nothing falls between the two.
        let live = self
            .live
            .get_or_init(|| broadcast::channel(self.lag).0)
            .subscribe();
        let (backlog, missed, last_seen) = {
            let history = self.lock();
            let newest = history.back().map(|(s, _)| *s).unwrap_or(0);
            let last_seen = if live_only {
                Some(newest)
            } else {
                last_seen.map(|seen| if seen > newest { 0 } else { seen })
            };
            let oldest = history.front().map(|(s, _)| *s);
            let missed = match (last_seen, oldest) {
                (Some(seen), Some(oldest)) if seen + 1 < oldest => oldest - seen - 1,
                _ => 0,
            };
            let backlog: Vec<Numbered> = history
                .iter()
                .filter(|(s, _)| last_seen.is_none_or(|seen| *s > seen))
                .cloned()
                .collect();
            (backlog, missed, last_seen)
        };
        let mut first = Vec::new();
        first.push(Bytes::from_static(b"retry: 1000\n\n"));
        if missed > 0 {
            first.push(missed_frame(missed));
        }
        let last = backlog.last().map(|(s, _)| *s).or(last_seen).unwrap_or(0);
        first.extend(backlog.iter().map(frame));
        let state = Follow {
            pending: first.into(),
            live,
            last,
        };
        futures::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(bytes) = state.pending.pop_front() {
                    return Some((Ok(bytes), state));
                }
                match tokio::time::timeout(KEEPALIVE, state.live.recv()).await {
                    Err(_) => return Some((Ok(Bytes::from_static(b": keepalive\n\n")), state)),
                    Ok(Ok(event)) if event.0 <= state.last => continue,
                    Ok(Ok(event)) => {
                        state.last = event.0;
                        return Some((Ok(frame(&event)), state));
                    }
                    Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                        // Skipped by the channel: said, never silent.
                        state.last += n;
                        return Some((Ok(missed_frame(n)), state));
                    }
                    Ok(Err(broadcast::error::RecvError::Closed)) => return None,
                }
            }
        })
    }
}

struct Follow {
    pending: VecDeque<Bytes>,
    live: broadcast::Receiver<Numbered>,
    /// The number of the last event sent (or known missed).
    last: u64,
}

fn frame((seq, json): &Numbered) -> Bytes {
    Bytes::from(format!("id: {seq}\nevent: state\ndata: {json}\n\n"))
}

fn missed_frame(n: u64) -> Bytes {
    Bytes::from(format!("event: missed\ndata: {{\"missed\":{n}}}\n\n"))
}
