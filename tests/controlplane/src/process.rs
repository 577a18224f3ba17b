//! Test processes (the control plane, the test registry), supervised so they cannot outlive
//! this process.
//!
//! Each program runs under a small `sh` supervisor whose standard input is a pipe from this
//! process. When this process exits for any reason (tests done, a panic, a kill), the pipe
//! closes, the supervisor's `cat` returns, and it stops the program. That needs no signal
//! handling and no unsafe code here.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};

use crate::Error;

/// Runs `"$@"`, waits for standard input to close, then stops it: SIGTERM, and SIGKILL after a
/// 5 s grace period (kube-apiserver can hang in graceful shutdown once etcd is gone). Removes
/// `$CLEANUP_DIR`, if set, once the program has exited.
const SUPERVISOR: &str = r#""$@" </dev/null &
child=$!
cat >/dev/null
kill "$child" 2>/dev/null
i=0
while kill -0 "$child" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
kill -9 "$child" 2>/dev/null
wait "$child"
if [ -n "$CLEANUP_DIR" ]; then rm -rf "$CLEANUP_DIR"; fi
"#;

/// A supervised process (control plane programs, and the test registry).
#[derive(Debug)]
pub struct Supervised {
    pub(crate) name: &'static str,
    child: Child,
    lifeline: Option<ChildStdin>,
    log: PathBuf,
}

impl Supervised {
    /// Starts `program args…` with its output in `log`.
    pub fn spawn<I, S>(
        name: &'static str,
        program: &Path,
        args: I,
        log: PathBuf,
        cleanup_dir: Option<&Path>,
    ) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = fs::File::create(&log).map_err(Error::io("create", &log))?;
        let err = out.try_clone().map_err(Error::io("open", &log))?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(SUPERVISOR)
            .arg(name)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err);
        if let Some(dir) = cleanup_dir {
            cmd.env("CLEANUP_DIR", dir);
        }
        let mut child = cmd.spawn().map_err(Error::io("start", program))?;
        let lifeline = child.stdin.take();
        Ok(Self {
            name,
            child,
            lifeline,
            log,
        })
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of the log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 4096)
    }

    /// Stops the process and waits for its supervisor.
    pub fn stop(&mut self) {
        drop(self.lifeline.take());
        // The supervisor exits once the program has; the status itself is of no interest.
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `max` bytes of a log file, starting at a line boundary.
pub fn log_tail(path: &Path, max: u64) -> String {
    let Ok(mut file) = fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    match (start > 0, text.find('\n')) {
        (true, Some(i)) => text[i + 1..].to_owned(),
        _ => text.into_owned(),
    }
}
