//! One sandboxed child: a new session (so its whole process group can be
//! killed), resource limits set between fork and exec, piped stdio drained
//! by threads, and a wall-clock deadline.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// PATH inside the sandbox; nothing else of the host's environment leaks in.
pub const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Limits applied to the child and everything it starts.
#[derive(Debug, Clone)]
pub struct Limits {
    pub wall: Duration,
    pub cpu_seconds: u64,
    pub address_space_bytes: u64,
    pub file_size_bytes: u64,
    pub processes: u64,
    pub output_bytes: usize,
}

/// What happened to one child.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// The deadline passed and the group was killed.
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The child wrote more than `output_bytes` to stdout or stderr.
    pub output_truncated: bool,
    pub elapsed: Duration,
    /// The process group id, which equals the child's pid (it called setsid).
    #[cfg_attr(not(test), allow(dead_code))]
    pub pgid: i32,
}

/// Runs `program args` in `dir` and feeds it `stdin`.
pub fn run(
    program: &Path,
    args: &[String],
    dir: &Path,
    stdin: &[u8],
    limits: &Limits,
) -> Result<Finished> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", SANDBOX_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let rlimits = [
        // Soft limit sends SIGXCPU (counted as a timeout); the hard one a
        // second later is SIGKILL for code that catches SIGXCPU.
        (
            libc::RLIMIT_CPU,
            limits.cpu_seconds,
            limits.cpu_seconds.saturating_add(1),
        ),
        (
            libc::RLIMIT_AS,
            limits.address_space_bytes,
            limits.address_space_bytes,
        ),
        (
            libc::RLIMIT_FSIZE,
            limits.file_size_bytes,
            limits.file_size_bytes,
        ),
        // Ignored for root (CAP_SYS_RESOURCE); bounds fork bombs otherwise.
        (libc::RLIMIT_NPROC, limits.processes, limits.processes),
        (libc::RLIMIT_CORE, 0, 0),
    ];
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (setsid, setrlimit) on stack data.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            for (resource, soft, hard) in rlimits {
                // An unprivileged process cannot raise its hard limit: stay
                // under whatever limit the host already imposes.
                let mut current = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                let ceiling = if libc::getrlimit(resource, &mut current) == 0 {
                    current.rlim_max
                } else {
                    libc::RLIM_INFINITY
                };
                let lim = libc::rlimit {
                    rlim_cur: (soft as libc::rlim_t).min(ceiling),
                    rlim_max: (hard as libc::rlim_t).min(ceiling),
                };
                if libc::setrlimit(resource, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let pid = child.id() as i32;

    let mut child_stdin = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_vec();
    // A child that exits without reading its input closes the pipe: the
    // write error is expected then.
    let writer = thread::spawn(move || {
        let _ = child_stdin.write_all(&input);
    });
    let stdout_rx = drain(
        child.stdout.take().expect("stdout is piped"),
        limits.output_bytes,
    );
    let stderr_rx = drain(
        child.stderr.take().expect("stderr is piped"),
        limits.output_bytes,
    );

    // Wait for the exit without reaping, so the pid (and with it the process
    // group id) cannot be reused before the group is killed below.
    let (exit_tx, exit_rx) = mpsc::channel();
    thread::spawn(move || {
        wait_for_exit_unreaped(pid);
        let _ = exit_tx.send(());
    });
    let timed_out = exit_rx.recv_timeout(limits.wall).is_err();
    // Always kill the group: children the program left running go too.
    // SAFETY: plain system call; pid is our unreaped child's group id.
    unsafe {
        libc::killpg(pid, libc::SIGKILL);
    }
    if timed_out {
        let _ = exit_rx.recv();
    }
    let elapsed = started.elapsed();
    let status = child.wait().context("cannot reap the sandboxed process")?;
    let _ = writer.join();
    // A descendant that left the group (setsid) may hold the pipes open;
    // don't wait for it forever.
    let grace = Duration::from_secs(2);
    let (stdout, out_cut) = stdout_rx.recv_timeout(grace).unwrap_or_default();
    let (stderr, err_cut) = stderr_rx.recv_timeout(grace).unwrap_or_default();
    Ok(Finished {
        status,
        timed_out,
        stdout,
        stderr,
        output_truncated: out_cut || err_cut,
        elapsed,
        pgid: pid,
    })
}

/// Reads a pipe to its end on a thread, keeping at most `cap` bytes; the
/// rest is read and dropped so the child never blocks on a full pipe.
fn drain<R: Read + Send + 'static>(mut pipe: R, cap: usize) -> mpsc::Receiver<(Vec<u8>, bool)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut cut = false;
        let mut buf = [0u8; 64 * 1024];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = cap.saturating_sub(kept.len());
                    if n > room {
                        cut = true;
                    }
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = tx.send((kept, cut));
    });
    rx
}

fn wait_for_exit_unreaped(pid: i32) {
    loop {
        // SAFETY: siginfo_t is plain data; waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// The signal that ended the process, if one did.
pub fn signal_of(status: &ExitStatus) -> Option<i32> {
    status.signal()
}

/// Finds `name` on the host's PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
