//! Per-worker output files with size-based rotation, fed line by line from the child's pipes
//! (and from module workers' tracing events), mirrored into `tracing`.
//!
//! Lossless by construction: a pump reads until EOF (so output written just before exit, or
//! while handling SIGTERM, is read), lines are only ever written whole, and a file is rotated
//! only between lines. Bytes are written as they came; invalid UTF-8 is only replaced in the
//! `tracing` mirror.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::LogsConfig;
use crate::WorkerId;

/// Longest line kept whole; a longer one is cut into pieces of this size.
pub const MAX_LINE: usize = 1024 * 1024;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The child's stdout.
    Stdout,
    /// The child's stderr.
    Stderr,
    /// A module worker's tracing event.
    Tracing,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Tracing => "tracing",
        }
    }
}

/// One worker's log file and its rotation state. Shared by the worker's pumps.
#[derive(Debug)]
pub struct LogSink {
    id: WorkerId,
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    mirror: bool,
    /// The open file (`None` until the first line, so a quiet worker holds no descriptor:
    /// with thousands of workers, every descriptor the master holds slows every fork) and the
    /// lines kept while the file cannot be written.
    file: Mutex<State>,
    write_errors: std::sync::atomic::AtomicU64,
    dropped_lines: std::sync::atomic::AtomicU64,
}

/// Lines kept in memory while the file cannot be written (a full disk): at most this many
/// bytes, the oldest dropped (and counted) beyond.
pub const BACKLOG_BYTES: usize = 1024 * 1024;

#[derive(Debug, Default)]
struct State {
    current: Option<Current>,
    backlog: std::collections::VecDeque<Vec<u8>>,
    backlog_bytes: usize,
    failing: bool,
}

/// How a worker's log writes fare: what a full disk cost, never silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LogWrites {
    /// Writes that failed (ENOSPC, EIO, …).
    pub write_errors: u64,
    /// Lines held in memory, to be written when the file can take them.
    pub buffered_lines: u64,
    /// Lines dropped because the memory kept for them was full.
    pub dropped_lines: u64,
}

#[derive(Debug)]
struct Current {
    file: File,
    size: u64,
}

impl Current {
    /// `path` is still this open file (same device and inode).
    fn still_at(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self.file.metadata(), std::fs::metadata(path)) {
            (Ok(ours), Ok(there)) => ours.ino() == there.ino() && ours.dev() == there.dev(),
            _ => false,
        }
    }
}

impl LogSink {
    /// Checks that `<directory>/<id>.log` can be appended to (creating the directory): an
    /// existing file is opened for appending, otherwise the directory must be writable. The
    /// file itself is created at the first line: creating a file costs ext4 up to half a
    /// millisecond of kernel time right after many were deleted, which a thousand silent
    /// workers would pay at every launch for nothing.
    ///
    /// # Errors
    /// When the directory cannot be created or written, or the file cannot be appended to.
    pub fn open(id: &WorkerId, config: &LogsConfig) -> io::Result<Self> {
        std::fs::create_dir_all(&config.directory)?;
        let path = config.directory.join(format!("{id}.log"));
        match OpenOptions::new().append(true).open(&path) {
            Ok(file) => drop(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                super::sys::check_writable_dir(&config.directory).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "cannot create files in `{}`: {e}",
                            config.directory.display()
                        ),
                    )
                })?;
            }
            Err(e) => return Err(e),
        }
        Ok(Self {
            id: id.clone(),
            path,
            max_size: config.max_size.0.max(1),
            max_files: config.max_files,
            mirror: config.mirror,
            file: Mutex::new(State::default()),
            write_errors: Default::default(),
            dropped_lines: Default::default(),
        })
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends complete lines (without their `\n`), rotating between lines when the next one
    /// would pass `max_size`. Output never blocks the child: when the file cannot be written
    /// (a full disk), the lines are kept in memory (up to [`BACKLOG_BYTES`]) and written, in
    /// order, by the next write that succeeds; errors and dropped lines are counted
    /// ([`Self::writes`]) and the first failure of a streak is logged.
    pub fn write_lines(&self, stream: Stream, lines: &[&[u8]]) {
        if lines.is_empty() {
            return;
        }
        crate::line_watch::check(&self.id, lines);
        if self.mirror && stream != Stream::Tracing {
            for line in lines {
                tracing::info!(target: "hsu::output", worker = %self.id, stream = stream.name(), "{}", String::from_utf8_lossy(line));
            }
        }
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        // A current file deleted or moved away (an operator's `rm`, logrotate without
        // copytruncate) would swallow every later line: write to a new one at the path instead.
        if state
            .current
            .as_ref()
            .is_some_and(|c| !c.still_at(&self.path))
        {
            tracing::warn!(worker = %self.id, path = %self.path.display(), "the log file was deleted or moved; writing to a new one");
            state.current = None;
        }
        let opened = match state.current.take() {
            Some(current) => Ok(current),
            None => open_append(&self.path).and_then(|file| {
                let size = file.metadata()?.len();
                Ok(Current { file, size })
            }),
        };
        // Kept lines first, in order, then these.
        let backlog = std::mem::take(&mut state.backlog);
        let kept = backlog.len();
        let written = opened.and_then(|mut current| {
            let all: Vec<&[u8]> = backlog
                .iter()
                .map(Vec::as_slice)
                .chain(lines.iter().copied())
                .collect();
            let result = self.append(&mut current, &all);
            state.current = Some(current);
            result
        });
        use std::sync::atomic::Ordering::Relaxed;
        match written {
            Ok(()) => {
                state.backlog_bytes = 0;
                if state.failing {
                    state.failing = false;
                    tracing::warn!(worker = %self.id, path = %self.path.display(), written = kept, dropped = self.dropped_lines.load(Relaxed), "worker output can be written again; the lines kept meanwhile are written");
                }
            }
            Err(e) => {
                self.write_errors.fetch_add(1, Relaxed);
                if !state.failing {
                    state.failing = true;
                    tracing::error!(worker = %self.id, path = %self.path.display(), error = %e, "cannot write worker output; keeping up to {BACKLOG_BYTES} bytes of lines in memory until it can (counted in the worker's diagnostics)");
                }
                // A write cut short may have put part of the batch in the file: it is kept
                // whole, so a line may appear twice, but none is lost while memory lasts.
                state.backlog = backlog;
                for line in lines {
                    state.backlog_bytes += line.len() + 1;
                    state.backlog.push_back(line.to_vec());
                }
                while state.backlog_bytes > BACKLOG_BYTES {
                    let Some(old) = state.backlog.pop_front() else {
                        break;
                    };
                    state.backlog_bytes -= old.len() + 1;
                    self.dropped_lines.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// What the file's writes cost so far.
    pub fn writes(&self) -> LogWrites {
        use std::sync::atomic::Ordering::Relaxed;
        let buffered = self
            .file
            .lock()
            .map(|s| s.backlog.len() as u64)
            .unwrap_or_default();
        LogWrites {
            write_errors: self.write_errors.load(Relaxed),
            buffered_lines: buffered,
            dropped_lines: self.dropped_lines.load(Relaxed),
        }
    }

    fn append(&self, current: &mut Current, lines: &[&[u8]]) -> io::Result<()> {
        let mut batch = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            let len = line.len() as u64 + 1;
            if current.size + batch.len() as u64 + len > self.max_size
                && current.size + batch.len() as u64 > 0
            {
                current.file.write_all(&batch)?;
                current.size += batch.len() as u64;
                batch.clear();
                self.rotate(current)?;
            }
            batch.extend_from_slice(line);
            batch.push(b'\n');
        }
        current.file.write_all(&batch)?;
        current.size += batch.len() as u64;
        Ok(())
    }

    /// `<id>.log` becomes `<id>.log.1`, `.1` becomes `.2`, …; the oldest beyond `max_files`
    /// is deleted; a new empty `<id>.log` is opened.
    fn rotate(&self, current: &mut Current) -> io::Result<()> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if !current.still_at(&self.path) {
            // Nothing of ours to rotate at the path: shifting `.1`, `.2`, … would only lose
            // history. Start a new file.
            current.file = open_append(&self.path)?;
            current.size = 0;
            return Ok(());
        }
        if self.max_files == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.max_files));
            for n in (1..self.max_files).rev() {
                match std::fs::rename(numbered(n), numbered(n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        current.file = open_append(&self.path)?;
        current.size = 0;
        Ok(())
    }
}

/// The last `lines` lines of worker `id`'s log, oldest first, across its rotated files
/// (`<id>.log.N` … `<id>.log.1`, then `<id>.log`). A worker that wrote nothing yet has none.
///
/// # Errors
/// When a file exists but cannot be read.
pub fn tail(config: &LogsConfig, id: &WorkerId, lines: usize) -> io::Result<Vec<String>> {
    LogFollower::start(config, id, lines).map(|(_, before)| before)
}

/// The last `lines` lines of `current` (the newest bytes) and then of `rotated` (newest
/// first), oldest first; older files are read only while more lines are wanted.
fn last_lines(current: &[u8], rotated: &mut [File], lines: usize) -> io::Result<Vec<String>> {
    let mut newest_first: Vec<String> = Vec::new();
    let take = |bytes: &[u8], newest_first: &mut Vec<String>| {
        for line in String::from_utf8_lossy(bytes).lines().rev() {
            if newest_first.len() >= lines {
                break;
            }
            newest_first.push(line.to_string());
        }
    };
    take(current, &mut newest_first);
    for file in rotated {
        if newest_first.len() >= lines {
            break;
        }
        let bytes = read_rest(file)?;
        take(&bytes, &mut newest_first);
    }
    newest_first.reverse();
    Ok(newest_first)
}

/// The bytes of `file` from its position to its end (the position moves there).
fn read_rest(file: &mut File) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A worker's log files opened at one moment, so that a rotation while they are looked up
/// neither repeats nor skips a file: `<id>.log` and the rotated files newer than a given one
/// (or all of them), each opened (a file renamed or deleted afterwards stays readable).
///
/// Paths move while the writer rotates (`.k` to `.k+1`, oldest first, then `<id>.log` to
/// `.1`), so the files are looked up in ascending order (a file can then only be met twice,
/// never missed, within one rotation: duplicates are dropped by inode), and the whole lookup
/// is repeated if `<id>.log` changed while it ran (a second rotation could move a file past
/// the scan).
struct Snapshot {
    /// `<id>.log`, when it exists.
    current: Option<File>,
    /// The rotated files, newest first.
    rotated: Vec<File>,
    /// Whether the file named as `newer_than` was met (false: it was rotated away, and with it
    /// perhaps files between it and the oldest one left).
    met: bool,
}

type FileId = (u64, u64);

fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

impl Snapshot {
    /// Rotated files are taken up to (without) `newer_than` when it is met; all of them
    /// otherwise.
    fn take(path: &Path, max_files: u32, newer_than: Option<FileId>) -> io::Result<Snapshot> {
        let id_at = |path: &Path| std::fs::metadata(path).ok().map(|m| file_id(&m));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let before = id_at(path);
            let mut rotated = Vec::new();
            let mut seen = std::collections::HashSet::new();
            let mut met = false;
            for n in 1..=max_files {
                let file = match File::open(numbered(path, n)) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                let id = file_id(&file.metadata()?);
                if Some(id) == newer_than {
                    met = true;
                    break;
                }
                if seen.insert(id) {
                    rotated.push(file);
                }
            }
            let current = match File::open(path) {
                Ok(file) => Some(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            let opened = match &current {
                Some(file) => Some(file_id(&file.metadata()?)),
                None => None,
            };
            let steady = before == opened && id_at(path) == opened;
            // A rotation takes microseconds, so a retry is almost always steady. Only a writer
            // that rotates without pause for a whole second (a tiny max_size under a flood)
            // gets what was seen, as it was seen.
            if steady || attempt >= 1000 {
                return Ok(Snapshot {
                    current,
                    rotated,
                    met,
                });
            }
            if attempt > 3 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
}

fn log_path(config: &LogsConfig, id: &WorkerId) -> PathBuf {
    config.directory.join(format!("{id}.log"))
}

fn numbered(current: &Path, n: u32) -> PathBuf {
    PathBuf::from(format!("{}.{n}", current.display()))
}

/// Follows a worker's log as it grows, across rotations, without losing or repeating a line:
/// the file being read stays open when it is renamed to `.1`, is read to its end, and only
/// then is the new `<id>.log` opened from its start. Poll it (it never blocks).
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    max_files: u32,
    file: Option<(File, u64)>,
    /// The bytes of a line not yet ended.
    partial: Vec<u8>,
    /// With no file open: the newest rotated file already read (the files after it, and then
    /// `<id>.log`, come next). `None` and no file: nothing was read yet.
    last: Option<FileId>,
    /// Times the files after the one being read were rotated away (past `max_files`) before
    /// they could be opened: lines the follower could not see.
    rotated_away: u64,
}

impl LogFollower {
    /// A follower from the current end of `id`'s log, and the last `lines` lines before that
    /// point (so the two together are exactly the log, with no gap or overlap).
    ///
    /// # Errors
    /// When an existing log file cannot be read.
    pub fn start(
        config: &LogsConfig,
        id: &WorkerId,
        lines: usize,
    ) -> io::Result<(LogFollower, Vec<String>)> {
        let path = log_path(config, id);
        let mut files = Snapshot::take(&path, config.max_files, None)?;
        let last = match files.rotated.first() {
            Some(newest) => Some(file_id(&newest.metadata()?)),
            None => None,
        };
        let (file, current) = match files.current {
            Some(mut file) => {
                // Read to its end: the follower goes on from exactly there.
                let bytes = read_rest(&mut file)?;
                let end = bytes.len() as u64;
                (Some((file, end)), bytes)
            }
            None => (None, Vec::new()),
        };
        let before = last_lines(&current, &mut files.rotated, lines)?;
        Ok((
            LogFollower {
                path,
                max_files: config.max_files,
                file,
                partial: Vec::new(),
                last,
                rotated_away: 0,
            },
            before,
        ))
    }

    /// How often files were rotated away (past `max_files`) before this follower could read
    /// them: each time, lines between the file it was reading and the oldest one left are lost
    /// to it (and to the disk).
    pub fn rotated_away(&self) -> u64 {
        self.rotated_away
    }

    /// The complete lines written since the last poll.
    ///
    /// # Errors
    /// When reading fails.
    pub fn poll(&mut self) -> io::Result<Vec<String>> {
        use std::io::Read as _;
        use std::os::unix::fs::MetadataExt;
        let mut out = Vec::new();
        loop {
            let at_path = std::fs::metadata(&self.path).ok();
            if let Some((file, offset)) = &mut self.file {
                let mut chunk = Vec::new();
                file.read_to_end(&mut chunk)?;
                *offset += chunk.len() as u64;
                take_lines(&mut self.partial, &chunk, &mut out);
                let ours = file.metadata()?;
                match &at_path {
                    // Same file, still growing or quiet: done for now.
                    Some(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => {
                        // Its length now (after the read: the path's was taken before it, and
                        // lines written in between are not a truncation).
                        if ours.len() < *offset {
                            // Truncated in place: start again from its beginning.
                            use std::io::Seek as _;
                            file.seek(io::SeekFrom::Start(0))?;
                            *offset = 0;
                            continue;
                        }
                        return Ok(out);
                    }
                    // Rotated (or deleted and recreated): ours is read to its end. If it
                    // rotated more than once since the last poll, the files rotated after it
                    // (`.k-1` … `.1`) are complete: read them whole, then go on with the new
                    // file from its start.
                    Some(_) => {
                        let mut files =
                            Snapshot::take(&self.path, self.max_files, Some(file_id(&ours)))?;
                        if !files.met && self.max_files > 0 {
                            self.rotated_away += 1;
                        }
                        self.last = Some(file_id(&ours));
                        self.take_rotated(&mut files, &mut out)?;
                        self.file = files.current.map(|f| (f, 0));
                        continue;
                    }
                    // Deleted and not recreated yet: keep ours.
                    None => return Ok(out),
                }
            }
            // No file open (none yet, or `<id>.log` was between a rotation's rename and the
            // new file): what was rotated since the last file read comes first, whole, and
            // `<id>.log` from its start.
            let mut files = Snapshot::take(&self.path, self.max_files, self.last)?;
            if self.last.is_some() && !files.met && self.max_files > 0 {
                self.rotated_away += 1;
            }
            self.take_rotated(&mut files, &mut out)?;
            match files.current {
                Some(f) => self.file = Some((f, 0)),
                None => return Ok(out),
            }
        }
    }

    /// Reads `files.rotated` whole, oldest first, and remembers the newest as read.
    fn take_rotated(&mut self, files: &mut Snapshot, out: &mut Vec<String>) -> io::Result<()> {
        for file in files.rotated.iter_mut().rev() {
            let bytes = read_rest(file)?;
            take_lines(&mut self.partial, &bytes, out);
        }
        if let Some(newest) = files.rotated.first() {
            self.last = Some(file_id(&newest.metadata()?));
        }
        Ok(())
    }
}

/// Appends `chunk` to `partial` and moves every complete line into `out`.
fn take_lines(partial: &mut Vec<u8>, chunk: &[u8], out: &mut Vec<String>) {
    partial.extend_from_slice(chunk);
    while let Some(end) = partial.iter().position(|b| *b == b'\n') {
        out.push(String::from_utf8_lossy(&partial[..end]).into_owned());
        partial.drain(..=end);
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    // Held as long as the worker writes: among the master's long-lived descriptors.
    Ok(File::from(super::sys::kept_high(file.into())))
}

/// Splits a byte stream into lines as it arrives and writes them to a sink.
#[derive(Debug, Default)]
pub struct LineSplitter {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// Lines written so far.
    pub count: u64,
}

impl LineSplitter {
    /// Writes every complete line in `chunk` (joined with what came before).
    pub fn feed(&mut self, chunk: &[u8], sink: &LogSink, stream: Stream) {
        let mut lines: Vec<&[u8]> = Vec::new();
        let mut start = 0;
        for (i, b) in chunk.iter().enumerate() {
            if *b == b'\n' {
                if self.partial.is_empty() {
                    lines.push(&chunk[start..i]);
                } else {
                    // Only the first line of a chunk can continue the previous one, so writing
                    // it now keeps the order.
                    self.partial.extend_from_slice(&chunk[start..i]);
                    let whole = std::mem::take(&mut self.partial);
                    sink.write_lines(stream, &[&whole]);
                    self.count += 1;
                }
                start = i + 1;
            }
        }
        self.count += lines.len() as u64;
        sink.write_lines(stream, &lines);
        self.partial.extend_from_slice(&chunk[start..]);
        while self.partial.len() >= MAX_LINE {
            let rest = self.partial.split_off(MAX_LINE);
            sink.write_lines(stream, &[&self.partial]);
            self.count += 1;
            self.partial = rest;
        }
    }

    /// Writes a last line that had no `\n`.
    pub fn finish(&mut self, sink: &LogSink, stream: Stream) {
        if !self.partial.is_empty() {
            sink.write_lines(stream, &[&self.partial]);
            self.count += 1;
            self.partial = Vec::new();
        }
    }
}

thread_local! {
    /// One read buffer per worker-runtime thread: a pump waiting for output holds no buffer,
    /// so a thousand idle children cost no memory here.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 * 1024]);
}

/// Reads a child's stdout and stderr to their ends and writes every line to `sink` (a last
/// line without `\n` too); the number of lines. One future for both: each is read as it becomes
/// readable, and a pipe that is always readable still yields to the other (and to the other
/// tasks) when tokio's cooperative budget runs out. Polled for readiness rather than through
/// tokio's `readable()` futures, it is ~280 bytes instead of ~700 in every child's task (0.4
/// MB at a thousand workers).
pub async fn pump_both(
    stdout: Option<tokio::net::unix::pipe::Receiver>,
    stderr: Option<tokio::net::unix::pipe::Receiver>,
    sink: &LogSink,
) -> u64 {
    let mut pipes = [
        Pipe::new(stdout, Stream::Stdout),
        Pipe::new(stderr, Stream::Stderr),
    ];
    std::future::poll_fn(|cx| poll_pipes(&mut pipes, sink, cx)).await
}

/// One output pipe being pumped; `pipe` is `None` once it has ended (closed at once).
struct Pipe {
    pipe: Option<tokio::net::unix::pipe::Receiver>,
    lines: LineSplitter,
    stream: Stream,
}

impl Pipe {
    fn new(pipe: Option<tokio::net::unix::pipe::Receiver>, stream: Stream) -> Self {
        Self {
            pipe,
            lines: LineSplitter::default(),
            stream,
        }
    }
}

/// Reads every open pipe of `pipes` until it would block; a pipe at its end (or failed) gets
/// its last line written and is closed. Ready with the lines of all once none is open.
fn poll_pipes(
    pipes: &mut [Pipe],
    sink: &LogSink,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<u64> {
    use std::task::Poll;
    let mut open = false;
    for p in pipes.iter_mut() {
        let Some(pipe) = &p.pipe else { continue };
        let ended = loop {
            // Takes a unit of the task's cooperative budget: Pending (and woken) when spent.
            match pipe.poll_read_ready(cx) {
                Poll::Pending => break false,
                Poll::Ready(Err(e)) => {
                    tracing::warn!(error = %e, "output pipe failed");
                    break true;
                }
                Poll::Ready(Ok(())) => {}
            }
            let read = READ_BUFFER.with(|buf| {
                let mut buf = buf.borrow_mut();
                let read = pipe.try_read(&mut buf[..]);
                if let Ok(n) = read {
                    p.lines.feed(&buf[..n], sink, p.stream);
                }
                read
            });
            match read {
                Ok(0) => break true,
                Ok(_) => {}
                // Not readable after all: the readiness is cleared, so the next poll waits.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "output pipe read failed");
                    break true;
                }
            }
        };
        if ended {
            p.lines.finish(sink, p.stream);
            p.pipe = None;
        } else {
            open = true;
        }
    }
    if open {
        Poll::Pending
    } else {
        Poll::Ready(pipes.iter().map(|p| p.lines.count).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ByteSize;

    /// Logs in `dir`, rotated at `max_size` bytes, `max_files` kept, not mirrored.
    fn logs_in(dir: &Path, max_size: u64, max_files: u32) -> LogsConfig {
        LogsConfig {
            directory: dir.to_path_buf(),
            max_size: ByteSize(max_size),
            max_files,
            mirror: false,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hsu-logs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn rotates_between_lines_and_keeps_max_files() {
        let dir = temp_dir("rotate");
        let config = logs_in(&dir, 100, 2);
        let sink = LogSink::open(&WorkerId::new("w").unwrap(), &config).unwrap();
        let lines: Vec<String> = (0..40).map(|i| format!("line {i:04}")).collect(); // 10 bytes each
        for l in &lines {
            sink.write_lines(Stream::Stdout, &[l.as_bytes()]);
        }
        let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap_or_default();
        let (cur, one, two) = (read("w.log"), read("w.log.1"), read("w.log.2"));
        assert!(!dir.join("w.log.3").exists());
        assert_eq!(one.len(), 100);
        assert_eq!(
            format!("{two}{one}{cur}"),
            lines[..]
                .iter()
                .skip(10)
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[actix_rt::test]
    async fn pump_joins_split_reads_and_keeps_a_last_unterminated_line() {
        let dir = temp_dir("pump");
        let config = LogsConfig {
            directory: dir.clone(),
            mirror: false,
            ..LogsConfig::default()
        };
        let sink = LogSink::open(&WorkerId::new("p").unwrap(), &config).unwrap();
        let (tx, rx) = tokio::net::unix::pipe::pipe().unwrap();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut tx = tx;
            tx.write_all(b"alpha\nbr").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            tx.write_all(b"avo\n\xff\xfe bytes\nlast").await.unwrap();
        });
        let n = pump_both(Some(rx), None, &sink).await;
        writer.await.unwrap();
        assert_eq!(n, 4);
        assert_eq!(
            std::fs::read(dir.join("p.log")).unwrap(),
            b"alpha\nbravo\n\xff\xfe bytes\nlast\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn overlong_lines_are_cut_not_lost() {
        let dir = temp_dir("long");
        let config = LogsConfig {
            directory: dir.clone(),
            mirror: false,
            ..LogsConfig::default()
        };
        let sink = LogSink::open(&WorkerId::new("l").unwrap(), &config).unwrap();
        let mut lines = LineSplitter::default();
        let long = vec![b'x'; MAX_LINE + 10];
        lines.feed(&long, &sink, Stream::Stdout);
        lines.feed(b"\n", &sink, Stream::Stdout);
        lines.finish(&sink, Stream::Stdout);
        let text = std::fs::read(dir.join("l.log")).unwrap();
        assert_eq!(text.len(), MAX_LINE + 10 + 2);
        assert_eq!(lines.count, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tail_reads_across_rotated_files_oldest_first() {
        let dir = std::env::temp_dir().join(format!("hsu-tail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = logs_in(&dir, 1 << 20, 3);
        std::fs::write(dir.join("t.log.2"), "one\ntwo\n").unwrap();
        std::fs::write(dir.join("t.log.1"), "three\n").unwrap();
        std::fs::write(dir.join("t.log"), "four\nfive\n").unwrap();
        let id = WorkerId::new("t").unwrap();
        assert_eq!(
            tail(&config, &id, 4).unwrap(),
            ["two", "three", "four", "five"]
        );
        assert_eq!(tail(&config, &id, 100).unwrap().len(), 5);
        assert_eq!(tail(&config, &id, 0).unwrap(), Vec::<String>::new());
        let quiet = WorkerId::new("quiet").unwrap();
        assert!(tail(&config, &quiet, 10).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_follower_sees_every_line_once_across_rotations() {
        let dir = temp_dir("follow");
        let config = logs_in(&dir, 200, 2);
        let id = WorkerId::new("f").unwrap();
        let sink = LogSink::open(&id, &config).unwrap();
        sink.write_lines(
            Stream::Stdout,
            &[b"before 1".as_slice(), b"before 2".as_slice()],
        );
        let (mut follower, before) = LogFollower::start(&config, &id, 10).unwrap();
        assert_eq!(before, ["before 1", "before 2"]);
        let mut seen = Vec::new();
        for n in 0..100 {
            let line = format!("line {n:03}");
            sink.write_lines(Stream::Stdout, &[line.as_bytes()]);
            // Polled rarely at first (several rotations in between), then often.
            if !(8..=60).contains(&n) {
                seen.extend(follower.poll().unwrap());
            }
            if n == 45 {
                seen.extend(follower.poll().unwrap());
            }
        }
        seen.extend(follower.poll().unwrap());
        let want: Vec<String> = (0..100).map(|n| format!("line {n:03}")).collect();
        assert_eq!(
            seen, want,
            "every line once, in order, through many rotations"
        );
        assert!(dir.join("f.log.2").exists(), "it did rotate");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tails_and_followers_taken_while_the_writer_rotates_repeat_and_skip_nothing() {
        // The writer rotates every 5 lines on its own thread while tails are taken and
        // followers started: each view must be consecutive lines, and a follower's tail plus
        // what it then reads must go on with no gap or repeat.
        let dir = temp_dir("race");
        let config = logs_in(&dir, 60, 30);
        let id = WorkerId::new("r").unwrap();
        let sink = LogSink::open(&id, &config).unwrap();
        let total = 8_000u32;
        let writer = std::thread::spawn(move || {
            for n in 0..total {
                sink.write_lines(Stream::Stdout, &[format!("line {n:05}").as_bytes()]);
                // A rotation every few hundred microseconds: far more often than any real log.
                if n % 2 == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
            }
        });
        let numbers = |lines: &[String]| -> Vec<u32> {
            lines.iter().map(|l| l[5..].parse().unwrap()).collect()
        };
        let consecutive = |ns: &[u32], what: &str| {
            for pair in ns.windows(2) {
                assert_eq!(pair[1], pair[0] + 1, "{what}: {ns:?}");
            }
        };
        let mut views = 0;
        let mut lost_views = 0;
        while !writer.is_finished() {
            let tail = numbers(&tail(&config, &id, 1000).unwrap());
            consecutive(&tail, "a tail");
            let (mut follower, before) = LogFollower::start(&config, &id, 1000).unwrap();
            let mut seen = numbers(&before);
            for _ in 0..3 {
                seen.extend(numbers(&follower.poll().unwrap()));
            }
            if follower.rotated_away() == 0 {
                consecutive(&seen, "a follower's tail, then what it read");
                views += 1;
            } else {
                // This thread was off the CPU for 30 rotations: what was rotated away is
                // gone from the disk too, and said so. Never a repeat, though.
                assert!(seen.windows(2).all(|p| p[1] > p[0]), "{seen:?}");
                lost_views += 1;
            }
        }
        writer.join().unwrap();
        assert!(
            views > 10 && lost_views < views,
            "views taken while writing: {views} whole, {lost_views} after a rotation away"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_file_is_created_at_the_first_line_and_an_existing_one_is_checked_at_once() {
        let dir = temp_dir("lazy");
        let config = logs_in(&dir, 1 << 20, 1);
        let id = WorkerId::new("quiet").unwrap();
        let sink = LogSink::open(&id, &config).unwrap();
        assert!(dir.is_dir() && !dir.join("quiet.log").exists());
        sink.write_lines(Stream::Stdout, &[b"first"]);
        assert_eq!(
            std::fs::read_to_string(dir.join("quiet.log")).unwrap(),
            "first\n"
        );
        // An existing file that cannot be appended to is refused when the sink opens.
        let blocked = WorkerId::new("blocked").unwrap();
        std::fs::create_dir_all(dir.join("blocked.log")).unwrap();
        assert!(LogSink::open(&blocked, &config).is_err());
    }

    #[test]
    fn a_full_disk_keeps_the_lines_counts_what_it_costs_and_writes_them_when_it_can() {
        let dir = temp_dir("full");
        let config = logs_in(&dir, 1 << 30, 3);
        let id = WorkerId::new("f").unwrap();
        let sink = LogSink::open(&id, &config).unwrap();
        // The file's place taken by /dev/full: every write fails with ENOSPC.
        let path = dir.join("f.log");
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        for n in 0..3 {
            sink.write_lines(Stream::Stdout, &[format!("kept {n}").as_bytes()]);
        }
        let w = sink.writes();
        assert_eq!(
            (w.write_errors, w.buffered_lines, w.dropped_lines),
            (3, 3, 0)
        );
        // More than the memory kept for them: the oldest go, counted.
        let big = vec![b'x'; 64 * 1024];
        for _ in 0..20 {
            sink.write_lines(Stream::Stdout, &[&big]);
        }
        let w = sink.writes();
        assert!(w.dropped_lines >= 3, "{w:?}");
        assert!(
            w.buffered_lines as usize * (64 * 1024) <= BACKLOG_BYTES,
            "{w:?}"
        );
        // The disk has room again (the file is a file again): everything kept is written, in
        // order, before the next line.
        std::fs::remove_file(&path).unwrap();
        sink.write_lines(Stream::Stdout, &[b"after"]);
        let w2 = sink.writes();
        assert_eq!(w2.buffered_lines, 0);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as u64, w.buffered_lines + 1);
        assert_eq!(lines.last(), Some(&"after"));
        assert!(lines[..lines.len() - 1]
            .iter()
            .all(|l| l.len() == 64 * 1024));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_deleted_log_file_is_recreated_and_history_kept() {
        let dir = temp_dir("deleted");
        let config = logs_in(&dir, 60, 3);
        let id = WorkerId::new("d").unwrap();
        let sink = LogSink::open(&id, &config).unwrap();
        for n in 0..12 {
            sink.write_lines(Stream::Stdout, &[format!("line {n:03}").as_bytes()]);
        }
        let history: Vec<String> = (1..=3)
            .map(|n| std::fs::read_to_string(dir.join(format!("d.log.{n}"))).unwrap_or_default())
            .collect();
        std::fs::remove_file(dir.join("d.log")).unwrap();
        for n in 12..14 {
            sink.write_lines(Stream::Stdout, &[format!("line {n:03}").as_bytes()]);
        }
        let current = std::fs::read_to_string(dir.join("d.log")).unwrap();
        assert_eq!(
            current, "line 012\nline 013\n",
            "every line after the deletion"
        );
        let after: Vec<String> = (1..=3)
            .map(|n| std::fs::read_to_string(dir.join(format!("d.log.{n}"))).unwrap_or_default())
            .collect();
        assert_eq!(after, history, "the rotated history is untouched");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
