//! `<run_directory>/hsu.pids`: the PID (and control port) of every running process worker,
//! one line each (`<id> <pid>` or `<id> <pid> port=<port>`), for the next master to find what a
//! master that died left behind (`leftovers.rs`), and for tools that want a PID without asking
//! the API.
//!
//! One file for all workers, rewritten in place, rather than a `<id>.pid` file each: creating a
//! file on ext4 right after many were deleted costs up to half a millisecond of kernel time
//! (measured here: 0.45 ms a file, every launch pays it again since the previous stop deleted
//! them), which at a thousand workers was the largest part of launching them. The file is
//! created with the first record and removed with the last. Changes are written by a thread of
//! its own, at most every [`BATCH`]: a launch or stop of a thousand workers is a few dozen
//! writes, not a thousand rewrites of a growing file on the master's thread. [`RunTable::flush`]
//! writes at once (the master's shutdown ends with it).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::WorkerId;

/// The file's name in the run directory.
pub const FILE: &str = "hsu.pids";

/// How long the writer gathers changes before it writes them.
pub const BATCH: Duration = Duration::from_millis(2);

/// The run directory's table of running process workers.
#[derive(Debug)]
pub struct RunTable {
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
    /// The open file; held while writing, so writes never interleave and the last one written
    /// is the newest.
    file: Mutex<Option<File>>,
}

#[derive(Debug, Default)]
struct State {
    records: BTreeMap<WorkerId, (u32, Option<u16>)>,
    /// Changed since the last write took its snapshot.
    dirty: bool,
    /// Not written until [`RunTable::flush`]: the master is stopping everything.
    held: bool,
    closed: bool,
}

/// A worker's line in the table, removed when this is dropped.
#[derive(Debug)]
pub struct RunRecord {
    table: Arc<RunTable>,
    id: WorkerId,
    pid: u32,
}

impl Drop for RunRecord {
    fn drop(&mut self) {
        self.table.shared.change(|records| {
            // Only its own line: a newer run of the worker may have replaced it.
            if records
                .get(&self.id)
                .is_some_and(|(pid, _)| *pid == self.pid)
            {
                records.remove(&self.id);
            }
        });
    }
}

impl RunTable {
    /// The table of `dir` (nothing is written until a worker runs), with its writer thread.
    pub fn new(dir: &Path) -> Arc<Self> {
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            state: Mutex::default(),
            wake: Condvar::new(),
            file: Mutex::new(None),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("hsu-run-table".into())
                .spawn(move || shared.run())
                .map_err(|e| tracing::warn!(error = %e, "no run-table writer thread; the table is written at shutdown only"))
                .ok()
        };
        Arc::new(Self {
            shared,
            writer: Mutex::new(writer),
        })
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.shared.dir.join(FILE)
    }

    /// Records worker `id` running as `pid` (with its control `port`); written within
    /// [`BATCH`].
    pub fn record(self: &Arc<Self>, id: &WorkerId, pid: u32, port: Option<u16>) -> RunRecord {
        self.shared.change(|records| {
            records.insert(id.clone(), (pid, port));
        });
        RunRecord {
            table: self.clone(),
            id: id.clone(),
            pid,
        }
    }

    /// Stops writing changes until [`RunTable::flush`]: while the master stops every worker,
    /// a rewrite every [`BATCH`] would only drop lines of processes that are going anyway (a
    /// sixteenth of the stop of a thousand). A master killed meanwhile leaves lines of
    /// processes that may have ended; the next master kills only what it can tell is the
    /// one recorded (`leftovers.rs`), as for any line written before its process ended.
    pub fn hold(&self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .held = true;
    }

    /// Writes the table now (and changes again within [`BATCH`] after it, if they were held).
    ///
    /// # Errors
    /// When the file cannot be written or removed.
    pub fn flush(&self) -> io::Result<()> {
        let written = self.shared.write_now();
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        state.held = false;
        // Changes made between the write and now were held: they are the writer's.
        let due = state.due();
        drop(state);
        if due {
            self.shared.wake.notify_one();
        }
        written
    }
}

impl Drop for RunTable {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.closed = true;
        }
        self.shared.wake.notify_all();
        if let Some(writer) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = writer.join();
        }
    }
}

impl State {
    /// Whether the writer has something to write now.
    fn due(&self) -> bool {
        self.dirty && !self.held
    }
}

impl Shared {
    fn change(&self, f: impl FnOnce(&mut BTreeMap<WorkerId, (u32, Option<u16>)>)) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let was_due = state.due();
        f(&mut state.records);
        state.dirty = true;
        // The writer is told only when there is newly something for it: a change while it
        // gathers a batch is in that batch, and one while the table is held waits for the
        // flush. (Told of every change, it woke a thousand times in the stop of a thousand
        // workers to find the table held.)
        let wake = !was_due && state.due();
        drop(state);
        if wake {
            self.wake.notify_one();
        }
    }

    /// The writer thread: waits for a change, gathers more for [`BATCH`], writes; after the
    /// table is closed, writes what is left and ends.
    fn run(&self) {
        loop {
            {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                while !state.due() && !state.closed {
                    state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                if state.closed && !state.due() {
                    return;
                }
            }
            std::thread::sleep(BATCH);
            if let Err(e) = self.write_now() {
                tracing::warn!(error = %e, path = %self.dir.join(FILE).display(), "cannot write the run table");
            }
        }
    }

    /// Takes a snapshot and writes it over the file (removing the file when it is empty).
    fn write_now(&self) -> io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let text = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.dirty = false;
            format_table(&state.records)
        };
        let path = self.dir.join(FILE);
        if text.is_empty() {
            *file = None;
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        if file.is_none() {
            std::fs::create_dir_all(&self.dir)?;
            *file = Some(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)?,
            );
        }
        let Some(f) = file.as_ref() else {
            return Ok(());
        };
        let written = f
            .write_all_at(text.as_bytes(), 0)
            .and_then(|()| f.set_len(text.len() as u64));
        if written.is_err() {
            // Opened again next time (the file may have been deleted or replaced).
            *file = None;
        }
        written
    }
}

fn format_table(records: &BTreeMap<WorkerId, (u32, Option<u16>)>) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(records.len() * 24);
    for (id, (pid, port)) in records {
        let _ = match port {
            Some(port) => writeln!(text, "{id} {pid} port={port}"),
            None => writeln!(text, "{id} {pid}"),
        };
    }
    text
}

/// A line of the table: worker id, PID, control port.
pub fn parse_line(line: &str) -> Option<(&str, i32, Option<u16>)> {
    let mut fields = line.split_whitespace();
    let id = fields.next()?;
    let pid = fields.next()?.parse().ok()?;
    let port = fields
        .find_map(|f| f.strip_prefix("port="))
        .and_then(|p| p.parse().ok());
    Some((id, pid, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_appear_and_go_and_the_file_goes_with_the_last() {
        let dir = std::env::temp_dir().join(format!("hsu-run-table-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let table = RunTable::new(&dir);
        let read = || {
            table.flush().unwrap();
            std::fs::read_to_string(table.path()).unwrap_or_default()
        };
        let a = table.record(&WorkerId::new("a").unwrap(), 100, None);
        let b = table.record(&WorkerId::new("b").unwrap(), 200, Some(4242));
        let text = read();
        assert_eq!(text, "a 100\nb 200 port=4242\n");
        assert_eq!(
            text.lines().map(parse_line).collect::<Vec<_>>(),
            vec![Some(("a", 100, None)), Some(("b", 200, Some(4242)))]
        );
        // A newer run of `a` replaced the line: the old record's drop leaves it.
        let a2 = table.record(&WorkerId::new("a").unwrap(), 101, None);
        drop(a);
        assert_eq!(read(), "a 101\nb 200 port=4242\n");
        // The writer thread writes without a flush, too.
        drop(b);
        let start = std::time::Instant::now();
        while std::fs::read_to_string(table.path()).unwrap_or_default() != "a 101\n" {
            assert!(start.elapsed() < Duration::from_secs(10), "never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(a2);
        assert_eq!(read(), "");
        assert!(!table.path().exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_held_table_waits_for_the_flush_and_the_writer_goes_on_after_it() {
        let dir = std::env::temp_dir().join(format!("hsu-run-table-held-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let table = RunTable::new(&dir);
        let on_disk = || std::fs::read_to_string(table.path()).unwrap_or_default();
        let a = table.record(&WorkerId::new("a").unwrap(), 100, None);
        table.flush().unwrap();
        table.hold();
        let b = table.record(&WorkerId::new("b").unwrap(), 200, None);
        std::thread::sleep(BATCH * 10);
        assert_eq!(on_disk(), "a 100\n", "written while held");
        table.flush().unwrap();
        assert_eq!(on_disk(), "a 100\nb 200\n");
        // After the flush the writer is told of changes again: no flush needed.
        drop(b);
        let start = std::time::Instant::now();
        while on_disk() != "a 100\n" {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "never written after the flush"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(a);
        table.flush().unwrap();
        assert!(!table.path().exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
