//! `<run_directory>/hsu.pids`: the PID (and control port) of every running process worker,
//! one line each (`<id> <pid>` or `<id> <pid> port=<port>`), for the next master to find what a
//! master that died left behind (`leftovers.rs`), and for tools that want a PID without asking
//! the API.
//!
//! One file for all workers, rewritten in place, rather than a `<id>.pid` file each: creating a
//! file on ext4 right after many were deleted costs up to half a millisecond of kernel time
//! (measured here: 0.45 ms a file, every launch pays it again since the previous stop deleted
//! them), which at a thousand workers was the largest part of launching them. The file is
//! created with the first record and removed with the last. Changes are coalesced without a
//! thread of its own: whoever changes the table writes it, and changes made while a write is
//! under way are taken by that writer's next round.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::WorkerId;

/// The file's name in the run directory.
pub const FILE: &str = "hsu.pids";

/// The run directory's table of running process workers.
#[derive(Debug)]
pub struct RunTable {
    dir: PathBuf,
    state: Mutex<State>,
    /// Held while writing, so writes never interleave.
    writing: Mutex<Option<File>>,
}

#[derive(Debug, Default)]
struct State {
    records: BTreeMap<WorkerId, (u32, Option<u16>)>,
    /// Changed since the last write began.
    dirty: bool,
    /// Someone is writing (and will look at `dirty` again before stopping).
    busy: bool,
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
        let written = self.table.change(|records| {
            // Only its own line: a newer run of the worker may have replaced it.
            if records
                .get(&self.id)
                .is_some_and(|(pid, _)| *pid == self.pid)
            {
                records.remove(&self.id);
            }
        });
        if let Err(e) = written {
            tracing::warn!(worker = %self.id, error = %e, path = %self.table.path().display(), "cannot write the run table");
        }
    }
}

impl RunTable {
    /// The table of `dir` (nothing is written until a worker runs).
    pub fn new(dir: &Path) -> Arc<Self> {
        Arc::new(Self {
            dir: dir.to_path_buf(),
            state: Mutex::default(),
            writing: Mutex::new(None),
        })
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Records worker `id` running as `pid` (with its control `port`).
    ///
    /// # Errors
    /// When the file cannot be written (the record is kept and written with the next change).
    pub fn record(
        self: &Arc<Self>,
        id: &WorkerId,
        pid: u32,
        port: Option<u16>,
    ) -> (RunRecord, io::Result<()>) {
        let written = self.change(|records| {
            records.insert(id.clone(), (pid, port));
        });
        (
            RunRecord {
                table: self.clone(),
                id: id.clone(),
                pid,
            },
            written,
        )
    }

    /// Applies `f` and writes the table, unless a write under way will take the change.
    fn change(
        &self,
        f: impl FnOnce(&mut BTreeMap<WorkerId, (u32, Option<u16>)>),
    ) -> io::Result<()> {
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut state.records);
            state.dirty = true;
            if state.busy {
                return Ok(());
            }
            state.busy = true;
        }
        let mut result = Ok(());
        loop {
            let text = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if !state.dirty {
                    state.busy = false;
                    return result;
                }
                state.dirty = false;
                format_table(&state.records)
            };
            result = self.write(&text);
        }
    }

    /// Writes `text` over the file (removing it when empty).
    fn write(&self, text: &str) -> io::Result<()> {
        let mut file = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path();
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
        let (a, ok) = table.record(&WorkerId::new("a").unwrap(), 100, None);
        ok.unwrap();
        let (b, ok) = table.record(&WorkerId::new("b").unwrap(), 200, Some(4242));
        ok.unwrap();
        let text = std::fs::read_to_string(table.path()).unwrap();
        assert_eq!(text, "a 100\nb 200 port=4242\n");
        assert_eq!(
            text.lines().map(parse_line).collect::<Vec<_>>(),
            vec![Some(("a", 100, None)), Some(("b", 200, Some(4242)))]
        );
        // A newer run of `a` replaced the line: the old record's drop leaves it.
        let (a2, _) = table.record(&WorkerId::new("a").unwrap(), 101, None);
        drop(a);
        assert_eq!(
            std::fs::read_to_string(table.path()).unwrap(),
            "a 101\nb 200 port=4242\n"
        );
        drop(b);
        drop(a2);
        assert!(!table.path().exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
