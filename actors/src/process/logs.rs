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
    /// The open file; `None` until the first line, so a quiet worker holds no descriptor
    /// (with thousands of workers, every descriptor the master holds slows every fork).
    file: Mutex<Option<Current>>,
}

#[derive(Debug)]
struct Current {
    file: File,
    size: u64,
}

impl LogSink {
    /// Checks that `<directory>/<id>.log` can be appended to (creating the directory and the
    /// file); the file is then opened again at the first line.
    ///
    /// # Errors
    /// When the directory or file cannot be created.
    pub fn open(id: &WorkerId, config: &LogsConfig) -> io::Result<Self> {
        std::fs::create_dir_all(&config.directory)?;
        let path = config.directory.join(format!("{id}.log"));
        drop(open_append(&path)?);
        Ok(Self {
            id: id.clone(),
            path,
            max_size: config.max_size.0.max(1),
            max_files: config.max_files,
            mirror: config.mirror,
            file: Mutex::new(None),
        })
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends complete lines (without their `\n`), rotating between lines when the next one
    /// would pass `max_size`. A write error is logged and the lines are dropped: output must
    /// never block the child.
    pub fn write_lines(&self, stream: Stream, lines: &[&[u8]]) {
        if lines.is_empty() {
            return;
        }
        if self.mirror && stream != Stream::Tracing {
            for line in lines {
                tracing::info!(target: "hsu::output", worker = %self.id, stream = stream.name(), "{}", String::from_utf8_lossy(line));
            }
        }
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let opened = match guard.take() {
            Some(current) => Ok(current),
            None => open_append(&self.path).and_then(|file| {
                let size = file.metadata()?.len();
                Ok(Current { file, size })
            }),
        };
        let written = opened.and_then(|mut current| {
            let result = self.append(&mut current, lines);
            *guard = Some(current);
            result
        });
        if let Err(e) = written {
            tracing::error!(worker = %self.id, path = %self.path.display(), error = %e, "cannot write worker output");
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
    let current = config.directory.join(format!("{id}.log"));
    let mut files = vec![current.clone()];
    files.extend(
        (1..=config.max_files).map(|n| PathBuf::from(format!("{}.{n}", current.display()))),
    );
    // Newest file first; stop once enough lines are collected.
    let mut newest_first: Vec<String> = Vec::new();
    for path in files {
        if newest_first.len() >= lines {
            break;
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().rev() {
            if newest_first.len() >= lines {
                break;
            }
            newest_first.push(line.to_string());
        }
    }
    newest_first.reverse();
    Ok(newest_first)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
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

/// Reads `pipe` to its end and writes every line to `sink`. A last line without `\n` is
/// written too. Returns the number of lines.
pub async fn pump(pipe: tokio::net::unix::pipe::Receiver, sink: &LogSink, stream: Stream) -> u64 {
    let mut lines = LineSplitter::default();
    loop {
        if let Err(e) = pipe.readable().await {
            tracing::warn!(error = %e, "output pipe failed");
            break;
        }
        let read = READ_BUFFER.with(|buf| {
            let mut buf = buf.borrow_mut();
            let read = pipe.try_read(&mut buf[..]);
            if let Ok(n) = read {
                lines.feed(&buf[..n], sink, stream);
            }
            read
        });
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                tracing::warn!(error = %e, "output pipe read failed");
                break;
            }
        }
    }
    lines.finish(sink, stream);
    lines.count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ByteSize;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hsu-logs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn rotates_between_lines_and_keeps_max_files() {
        let dir = temp_dir("rotate");
        let config = LogsConfig {
            directory: dir.clone(),
            max_size: ByteSize(100),
            max_files: 2,
            mirror: false,
        };
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
        let n = pump(rx, &sink, Stream::Stdout).await;
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
        let config = LogsConfig {
            directory: dir.clone(),
            max_size: ByteSize(1 << 20),
            max_files: 3,
            mirror: false,
        };
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
}
