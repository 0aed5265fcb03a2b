//! The readiness pipe: how a daemon tells the `launch` that started it that it answers now
//! (or why it could not start). One line, `ready` or `error: ...`.

use std::{
    fs::File,
    os::fd::{FromRawFd as _, RawFd},
};

/// Environment variable naming the descriptor of the pipe's write end.
pub const READY_FD_ENV: &str = "WEAVE_AGENT_READY_FD";

/// Takes the readiness pipe handed down by `launch`, if any, so children do not inherit it.
/// Must run before any other thread exists (it edits the environment).
pub fn take_ready_pipe() -> Option<File> {
    let text = std::env::var(READY_FD_ENV).ok()?;
    // SAFETY: called before any other thread exists, so nothing reads the environment
    // concurrently.
    unsafe { std::env::remove_var(READY_FD_ENV) };
    let fd = ready_fd(&text)?;
    // SAFETY: `launch` placed the pipe's write end at this descriptor for us alone. It must be
    // open and a pipe (checked below), so a stray variable cannot make us own and later close
    // a descriptor that is not ours. Close-on-exec from here on: nothing we start inherits it.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 || !is_fifo(fd) {
        tracing::warn!("{READY_FD_ENV}={text} is not an open pipe; not reporting readiness");
        return None;
    }
    // SAFETY: see above; we are the only owner from here on.
    Some(unsafe { File::from_raw_fd(fd) })
}

/// The descriptor number in `text`, if it may be the pipe. 0, 1 and 2 are the daemon's own
/// standard streams (its log): taking one of them would close it when the report is done.
fn ready_fd(text: &str) -> Option<RawFd> {
    text.trim().parse::<RawFd>().ok().filter(|fd| *fd > 2)
}

fn is_fifo(fd: RawFd) -> bool {
    // SAFETY: fstat writes only into the struct we pass; a zeroed stat is a valid buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; an invalid fd makes fstat fail, which we check.
    unsafe { libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd as _;

    use super::*;

    #[test]
    fn the_standard_streams_are_never_the_pipe() {
        for fd in ["0", "1", "2", " 2 ", "-1", "x", ""] {
            assert_eq!(ready_fd(fd), None, "{fd:?}");
        }
        assert_eq!(ready_fd("3"), Some(3));
    }

    #[test]
    fn only_a_pipe_is_taken_for_the_pipe() {
        let (read, write) = std::io::pipe().unwrap();
        assert!(is_fifo(write.as_raw_fd()) && is_fifo(read.as_raw_fd()));
        let file = File::open("/proc/self/status").unwrap();
        assert!(!is_fifo(file.as_raw_fd()));
        assert!(!is_fifo(-1));
    }
}
