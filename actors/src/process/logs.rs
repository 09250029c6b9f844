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

use tokio::io::{AsyncRead, AsyncReadExt};

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
    file: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    file: File,
    size: u64,
}

impl LogSink {
    /// Opens (appending to) `<directory>/<id>.log`, creating the directory.
    ///
    /// # Errors
    /// When the directory or file cannot be created.
    pub fn open(id: &WorkerId, config: &LogsConfig) -> io::Result<Self> {
        std::fs::create_dir_all(&config.directory)?;
        let path = config.directory.join(format!("{id}.log"));
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            id: id.clone(),
            path,
            max_size: config.max_size.0.max(1),
            max_files: config.max_files,
            mirror: config.mirror,
            file: Mutex::new(Current { file, size }),
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
        let mut current = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.append(&mut current, lines) {
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

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Reads `reader` to its end and writes every line to `sink`. A last line without `\n` is
/// written too. Returns the number of lines.
pub async fn pump<R: AsyncRead + Unpin>(mut reader: R, sink: &LogSink, stream: Stream) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    let mut count = 0u64;
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "output pipe read failed");
                break;
            }
        };
        let chunk = &buf[..n];
        let mut lines: Vec<&[u8]> = Vec::new();
        let mut start = 0;
        for (i, b) in chunk.iter().enumerate() {
            if *b == b'\n' {
                if partial.is_empty() {
                    lines.push(&chunk[start..i]);
                } else {
                    // Only the first line of a chunk can continue the previous read, so
                    // writing it now keeps the order.
                    partial.extend_from_slice(&chunk[start..i]);
                    let whole = std::mem::take(&mut partial);
                    sink.write_lines(stream, &[&whole]);
                    count += 1;
                }
                start = i + 1;
            }
        }
        count += lines.len() as u64;
        sink.write_lines(stream, &lines);
        partial.extend_from_slice(&chunk[start..]);
        while partial.len() >= MAX_LINE {
            let rest = partial.split_off(MAX_LINE);
            sink.write_lines(stream, &[&partial]);
            count += 1;
            partial = rest;
        }
    }
    if !partial.is_empty() {
        sink.write_lines(stream, &[&partial]);
        count += 1;
    }
    count
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
        let (mut tx, rx) = tokio::io::duplex(8);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(b"alpha\nbr").await.unwrap();
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
}
