//! The daemon's log, bounded. `launch` points the daemon's stderr at `agent.log`; past
//! [`MAX_LOG_BYTES`] the file moves to `agent.log.1` (replacing the one before) and a fresh
//! `agent.log` takes its place on stderr, so tracing and panic messages alike keep writing to
//! `agent.log`, and the two files never hold more than twice the limit.

use std::{
    fs::{self, OpenOptions},
    io,
    os::{
        fd::{AsRawFd as _, RawFd},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::{Context as _, Result};

/// Size at which the log moves aside.
pub const MAX_LOG_BYTES: u64 = 16 << 20;

static ROTATION: OnceLock<Rotation> = OnceLock::new();

/// Bounds the log at `path` if this process's stderr is that file (as `launch` arranges; a
/// daemon in the foreground of a service manager logs wherever that puts it).
pub fn bound(path: &Path) -> Result<()> {
    let file = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let stderr = fs::metadata("/proc/self/fd/2").context("reading stderr")?;
    if (file.dev(), file.ino()) != (stderr.dev(), stderr.ino()) {
        return Ok(());
    }
    let rotation = Rotation::new(
        path.to_owned(),
        MAX_LOG_BYTES,
        libc::STDERR_FILENO,
        file.len(),
    );
    let _ = ROTATION.set(rotation);
    Ok(())
}

/// The log file behind descriptor `fd`, moved aside at `limit` bytes.
struct Rotation {
    path: PathBuf,
    limit: u64,
    fd: RawFd,
    written: AtomicU64,
    rotating: Mutex<()>,
}

impl Rotation {
    fn new(path: PathBuf, limit: u64, fd: RawFd, size: u64) -> Self {
        Self {
            path,
            limit,
            fd,
            written: AtomicU64::new(size),
            rotating: Mutex::new(()),
        }
    }

    /// Counts `n` bytes just written to `fd`, and moves the file aside once over the limit.
    fn wrote(&self, n: usize) -> io::Result<()> {
        if self.written.fetch_add(n as u64, Ordering::Relaxed) + (n as u64) < self.limit {
            return Ok(());
        }
        let _one_at_a_time = self.rotating.lock().expect("log rotation");
        if self.written.load(Ordering::Relaxed) < self.limit {
            return Ok(());
        }
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        fs::rename(&self.path, &old)?;
        let fresh = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        // SAFETY: dup2 onto a descriptor this process owns for its whole life (its stderr);
        // `fresh` is closed afterwards, the copy at `fd` stays.
        if unsafe { libc::dup2(fresh.as_raw_fd(), self.fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
        self.written.store(0, Ordering::Relaxed);
        Ok(())
    }
}

/// The tracing writer: stderr, bounded once [`bound`] found it to be the log file.
pub struct StderrLog;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StderrLog {
    type Writer = StderrLog;

    fn make_writer(&'a self) -> Self::Writer {
        StderrLog
    }
}

impl io::Write for StderrLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = io::stderr().write(buf)?;
        if let Some(rotation) = ROTATION.get() {
            // A log that cannot rotate still logs; the next write tries again.
            let _ = rotation.wrote(n);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Write as _, os::fd::FromRawFd as _};

    use super::*;

    #[test]
    fn past_the_limit_the_log_moves_aside_and_writing_goes_on_in_a_fresh_file() {
        let dir = std::env::temp_dir().join(format!("weave-log-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        // A descriptor of its own stands in for stderr.
        // SAFETY: dup of a descriptor we own; the copy is owned by `out` below.
        let fd = unsafe { libc::dup(file.as_raw_fd()) };
        assert!(fd > 2);
        // SAFETY: `fd` was just created and nothing else owns it.
        let mut out = unsafe { fs::File::from_raw_fd(fd) };
        let rotation = Rotation::new(path.clone(), 100, fd, 0);
        for _ in 0..3 {
            out.write_all(&[b'x'; 40]).unwrap();
            rotation.wrote(40).unwrap();
        }
        out.write_all(b"after").unwrap();
        let old = fs::read(dir.join("agent.log.1")).unwrap();
        let new = fs::read_to_string(&path).unwrap();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(old.len(), 120, "the full log moved aside");
        assert_eq!(new, "after", "writes go on in the fresh file");
    }
}
