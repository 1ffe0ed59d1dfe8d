//! The namespaces each test's program runs in, made by bubblewrap (`bwrap`,
//! Flatpak's sandbox; Debian's package `bubblewrap`) rather than by
//! hand-written namespace code.
//!
//! What a program sees (`Bwrap::command`):
//! - a mount namespace whose root is an empty tmpfs, read-only once set up,
//!   holding only the system directories the interpreter needs, read-only
//!   (`/usr`, the `/lib*`, `/bin` and `/sbin` links or directories,
//!   `/etc/ld.so.cache`, the interpreter's own prefix when outside `/usr`),
//!   its own solution read-only at `/sandbox`, a fresh `/proc` of its own
//!   PID namespace, a minimal `/dev`, and private tmpfs mounts of a bounded
//!   size at `/tmp` (its working directory), `/var/tmp` and `/dev/shm`,
//!   gone with the namespace when the test ends. Nothing of the repository,
//!   the runs, the data, `/root`, `/home` or the host's `/tmp` and `/run`
//!   (where socket files live) exists in it;
//! - a PID namespace: `kill(-1, …)` reaches only its own processes, and
//!   when the program's first process exits, the kernel kills the rest;
//! - network, IPC and UTS namespaces: no interface but loopback, no
//!   abstract unix socket of the host, no System V IPC of others;
//! - a user namespace in which it keeps its own uid (`nobody` as root) and
//!   may create no further user namespace (`--disable-userns`).
//!
//! bwrap runs unprivileged, as the sandbox user, so it needs user
//! namespaces (unprivileged ones: Debian ≥ 11, Ubuntu with its bwrap
//! AppArmor profile, Fedora; not a container whose seccomp profile blocks
//! them). [`Bwrap::find`] builds the command; the sandbox's probe says
//! whether it runs here.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::{which_in, SANDBOX_PATH};

/// Where the program's solution is mounted inside the sandbox.
pub const SOLUTION_DIR: &str = "/sandbox";
/// The program's working directory inside the sandbox (a private tmpfs).
pub const WORK_DIR: &str = "/tmp";
/// Processes bwrap adds to a test's: its monitor, the namespace's init,
/// and the runner that becomes the program.
pub const OWN_PROCESSES: u64 = 2;

/// A bubblewrap command line for this sandbox's interpreter.
#[derive(Debug, Clone)]
pub struct Bwrap {
    program: PathBuf,
    /// Everything before the test's own mounts.
    head: Vec<String>,
    /// Whether the private tmpfs mounts have a size limit (`--size`, bwrap
    /// ≥ 0.7; without it they are bounded only by a memory cgroup).
    pub sized_tmpfs: bool,
}

impl Bwrap {
    /// Finds `bwrap` (a name: on the caller's PATH, then on
    /// [`SANDBOX_PATH`]; or a path) and builds the mounts for `python`.
    pub fn find(bwrap: &Path, python: &Path, tmp_bytes: u64) -> Result<Self, String> {
        let program = if bwrap.components().count() == 1 {
            let name = bwrap.to_string_lossy();
            let host_path = std::env::var_os("PATH").unwrap_or_default();
            which_in(&name, &host_path)
                .or_else(|| which_in(&name, SANDBOX_PATH.as_ref()))
                .ok_or_else(|| format!("{name} is not installed"))?
        } else {
            bwrap.to_path_buf()
        };
        let help = Command::new(&program)
            .arg("--help")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let help = String::from_utf8_lossy(&help.stdout).into_owned()
            + &String::from_utf8_lossy(&help.stderr);
        let sized_tmpfs = help.contains("--size");
        let mut head: Vec<String> = [
            "--unshare-all",
            "--unshare-user",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "sandbox",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if help.contains("--disable-userns") {
            head.push("--disable-userns".into());
        }
        let mut arg = |a: &str| head.push(a.to_string());
        arg("--ro-bind");
        arg("/usr");
        arg("/usr");
        for dir in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            let path = Path::new(dir);
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(path) {
                        arg("--symlink");
                        arg(&target.to_string_lossy());
                        arg(dir);
                    }
                }
                Ok(m) if m.is_dir() => {
                    arg("--ro-bind");
                    arg(dir);
                    arg(dir);
                }
                _ => {}
            }
        }
        arg("--ro-bind-try");
        arg("/etc/ld.so.cache");
        arg("/etc/ld.so.cache");
        for dir in interpreter_dirs(python)? {
            arg("--ro-bind");
            arg(&dir.to_string_lossy());
            arg(&dir.to_string_lossy());
        }
        arg("--proc");
        arg("/proc");
        arg("--dev");
        arg("/dev");
        for dir in [WORK_DIR, "/var/tmp", "/dev/shm"] {
            if sized_tmpfs {
                arg("--size");
                arg(&tmp_bytes.to_string());
            }
            arg("--tmpfs");
            arg(dir);
        }
        Ok(Self {
            program,
            head,
            sized_tmpfs,
        })
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The whole command for one test: `solution_dir` (the host directory
    /// holding `solution.py`) mounted read-only at [`SOLUTION_DIR`], then
    /// `command` run in [`WORK_DIR`].
    pub fn command(&self, solution_dir: &Path, command: &[String]) -> Vec<String> {
        let mut argv = vec![self.program.to_string_lossy().into_owned()];
        argv.extend(self.head.iter().cloned());
        argv.extend([
            "--ro-bind".to_string(),
            solution_dir.to_string_lossy().into_owned(),
            SOLUTION_DIR.to_string(),
            // Made read-only last: the mount points above are created in it.
            "--remount-ro".to_string(),
            "/dev".to_string(),
            "--remount-ro".to_string(),
            "/".to_string(),
            "--chdir".to_string(),
            WORK_DIR.to_string(),
            "--".to_string(),
        ]);
        argv.extend(command.iter().cloned());
        argv
    }
}

/// The directories the interpreter needs beyond `/usr`: its own and its
/// prefix's (a Python built into /opt or a home directory), each the
/// top-most one outside the directories mounted anyway.
pub(super) fn interpreter_dirs(python: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new(python)
        .args([
            "-I",
            "-S",
            "-c",
            "import sys; print(sys.base_prefix); print(sys.base_exec_prefix)",
        ])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let mut dirs: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .collect();
    if let Some(dir) = python.parent() {
        dirs.push(dir.to_path_buf());
    }
    let mut needed: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        let dir = dir.canonicalize().unwrap_or(dir);
        let covered = [
            "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
        ]
        .iter()
        .any(|system| dir.starts_with(system));
        if !covered && dir != Path::new("/") && !needed.iter().any(|n| dir.starts_with(n)) {
            needed.retain(|n| !n.starts_with(&dir));
            needed.push(dir);
        }
    }
    Ok(needed)
}
