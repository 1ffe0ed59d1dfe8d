//! Starting the sandbox's supervisor (`runner.py`): a new session, resource
//! limits and the child-subreaper flag set between fork and exec, an
//! optional empty network namespace (without bubblewrap), the report
//! channel on file descriptor 3, piped stdio drained by threads, and a
//! backstop deadline in case the supervisor itself stops answering.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// PATH inside the sandbox; nothing else of the host's environment leaks in.
pub const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The descriptor the supervisor writes its report to.
pub const REPORT_FD: i32 = 3;

/// Limits applied to the supervisor and everything it starts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The supervisor enforces this itself, from when the program's code
    /// starts; the host kills the supervisor's group only if it has not
    /// finished [`BACKSTOP`] after `setup + wall`.
    pub wall: Duration,
    /// The longest the sandbox may take to start the program (bubblewrap,
    /// the interpreter), on top of `wall`.
    pub setup: Duration,
    pub cpu_seconds: u64,
    pub address_space_bytes: u64,
    pub file_size_bytes: u64,
    /// RLIMIT_NPROC; `None`: unlimited (a pids cgroup bounds the program).
    pub processes: Option<u64>,
    pub output_bytes: usize,
}

/// How long past the wall-clock limit the host waits for the supervisor.
pub const BACKSTOP: Duration = Duration::from_secs(3);

/// What happened to one supervisor.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// The supervisor overran its own deadline by [`BACKSTOP`] and its
    /// process group was killed.
    pub backstop: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Everything written to the report channel.
    pub report: Vec<u8>,
    /// The program wrote more than `output_bytes` to stdout or stderr.
    pub output_truncated: bool,
    pub elapsed: Duration,
}

/// How the supervisor process is set up.
#[derive(Debug, Clone, Copy)]
pub struct Isolation {
    /// Give it (and so the program) an empty network namespace. Needs root.
    pub net_namespace: bool,
}

/// Runs `python -I -S -c runner args` in `dir` and feeds it `stdin`.
pub fn run(
    python: &Path,
    runner: &str,
    args: &[String],
    dir: &Path,
    stdin: &[u8],
    limits: &Limits,
    isolation: Isolation,
) -> Result<Finished> {
    let (report_read, report_write) = pipe()?;
    let report_fd = report_write.as_raw_fd();
    let mut cmd = Command::new(python);
    cmd.args(["-I", "-S", "-c", runner])
        .args(args)
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
        // Ignored for root (CAP_SYS_RESOURCE), so it binds the program once
        // it runs as the sandbox user; bounds fork bombs.
        (
            libc::RLIMIT_NPROC,
            limits.processes.unwrap_or(libc::RLIM_INFINITY),
            limits.processes.unwrap_or(libc::RLIM_INFINITY),
        ),
        (libc::RLIMIT_CORE, 0, 0),
    ];
    let net_namespace = isolation.net_namespace;
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls on stack data.
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
            // Orphaned descendants (setsid, double fork) become the
            // supervisor's children, so it can find and kill them all. The
            // flag survives exec.
            if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if net_namespace && libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if report_fd == REPORT_FD {
                // dup2 onto itself keeps close-on-exec set: clear it.
                if libc::fcntl(REPORT_FD, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(report_fd, REPORT_FD) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let spawned = cmd.spawn();
    // Only the supervisor may hold the writing end: the report ends (EOF)
    // when it exits.
    drop(report_write);
    let mut child = spawned.with_context(|| format!("cannot start {}", python.display()))?;
    let pid = child.id() as i32;

    let mut child_stdin = child.stdin.take().expect("stdin is piped");
    let input = stdin.to_vec();
    // A program that exits without reading its input closes the pipe: the
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
    let report_rx = drain(
        File::from(report_read),
        limits.output_bytes.saturating_add(1 << 20),
    );

    // Wait for the exit without reaping, so the pid (and with it the process
    // group id) cannot be reused before the group is killed below.
    let (exit_tx, exit_rx) = mpsc::channel();
    thread::spawn(move || {
        wait_for_exit_unreaped(pid);
        let _ = exit_tx.send(());
    });
    let backstop = exit_rx
        .recv_timeout(limits.setup + limits.wall + BACKSTOP)
        .is_err();
    // The supervisor has killed the program's processes itself; this only
    // matters when the backstop fired.
    // SAFETY: plain system call; pid is our unreaped child's group id.
    unsafe {
        libc::killpg(pid, libc::SIGKILL);
    }
    if backstop {
        let _ = exit_rx.recv();
    }
    let elapsed = started.elapsed();
    let status = child.wait().context("cannot reap the sandbox supervisor")?;
    let _ = writer.join();
    // Every process that held the pipes is gone unless the backstop fired
    // and a descendant escaped the group; don't wait for that one forever.
    let grace = Duration::from_secs(2);
    let (stdout, out_cut) = stdout_rx.recv_timeout(grace).unwrap_or_default();
    let (stderr, err_cut) = stderr_rx.recv_timeout(grace).unwrap_or_default();
    let (report, _) = report_rx.recv_timeout(grace).unwrap_or_default();
    Ok(Finished {
        status,
        backstop,
        stdout,
        stderr,
        report,
        output_truncated: out_cut || err_cut,
        elapsed,
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot create the report pipe");
    }
    // SAFETY: both descriptors are fresh and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads a pipe to its end on a thread, keeping at most `cap` bytes; the
/// rest is read and dropped so the writer never blocks on a full pipe.
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

/// Runs `python -I -S -c code` as `user` (when given) with the sandbox's
/// environment, and says why it failed when it does.
pub fn try_python(python: &Path, code: &str, user: Option<u32>) -> std::result::Result<(), String> {
    let mut cmd = Command::new(python);
    cmd.args(["-I", "-S", "-c", code])
        .current_dir("/")
        .env_clear()
        .env("PATH", SANDBOX_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(uid) = user {
        // SAFETY: only async-signal-safe system calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("exit status {}", out.status)))
}

/// Finds `name` on a PATH-style list of directories.
pub fn which_in(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Finds `name` on the host's PATH.
#[cfg(test)]
pub fn which(name: &str) -> Option<PathBuf> {
    which_in(name, &std::env::var_os("PATH")?)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
