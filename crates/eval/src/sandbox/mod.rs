//! Running a generated Python program against APPS test cases in a sandboxed
//! child process.
//!
//! Each test starts a supervisor, `python3 -I -S -c runner.py` (isolated
//! mode, no site packages, nothing from the working directory on its path),
//! in a fresh directory with an environment of PATH only, in a new session,
//! under RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE, RLIMIT_NPROC and no
//! core dumps. The supervisor forks the program's process, which gives up
//! the report channel, joins the test's control groups and gives up the
//! user before any of the program's code runs, then runs the program inside
//! bubblewrap's namespaces (see runner.py for the protocol).
//!
//! Isolation ([`Sandbox::isolation`]): each test's program runs in mount,
//! PID, network, IPC, UTS and user namespaces of its own ([`bwrap`]): it
//! sees the interpreter's system directories read-only, its own solution,
//! and private size-limited tmpfs mounts at /tmp, /var/tmp and /dev/shm —
//! not the repository, the runs, the data with the tests' answers, /root,
//! or any socket file; it cannot signal another test's processes or the
//! host's. Where bubblewrap is missing or cannot create namespaces,
//! [`Sandbox::new`] refuses unless [`SandboxConfig::allow_without_namespaces`].
//!
//! Budgets: one memory budget (tmpfs pages included) and one process
//! budget per program, as a control group per test ([`cgroup`]), the
//! process budget also as RLIMIT_NPROC inside the program's user namespace;
//! where no cgroup can be written memory is limited per process
//! (RLIMIT_AS), and [`Sandbox::weaknesses`] says so.
//!
//! Privileges: untrusted code never runs as the host's user. As root, the
//! program runs as `nobody` (uid/gid 65534) with no supplementary groups;
//! the interpreter is resolved to one `nobody` can run (a pyenv shim under
//! /root is not; the same name on [`SANDBOX_PATH`] is tried next), or
//! [`Sandbox::new`] refuses. As any other user the sandbox cannot change
//! user and refuses unless [`SandboxConfig::allow_same_user`] says to run
//! programs as the caller anyway (inside the namespaces, which hide the
//! caller's files and processes). [`Sandbox::drops_privileges`] says which.
//!
//! Secrets: the supervisor and the program get PATH and nothing else of the
//! host's environment; the program's PID namespace shows no other process,
//! and without namespaces every other process's `/proc/<pid>/environ` is
//! private to its owner. Test directories are private to `nobody`, under a
//! parent that only root can list.
//!
//! Results: the exit status, signal or timeout and the return value of a
//! call-based problem reach the host on a pipe that only the supervisor
//! holds, never through anything the program prints. A program decides its
//! own output and return value (that is its answer), not the verdict.
//!
//! Processes: the supervisor is a child subreaper, so every process the
//! program starts stays its descendant, also after setsid() or a double
//! fork; when the program ends or its wall-clock limit passes, the
//! supervisor kills them all (and the PID namespace dies with its first
//! process). The host kills the supervisor's process group if it overruns
//! its own deadline, and empties the test's cgroup.
//!
//! Network: the program's Python has its socket constructors and resolvers
//! replaced by ones that raise `PermissionError`, and it runs in an empty
//! network namespace (without bubblewrap: as root, the supervisor's own);
//! [`Sandbox::network_isolation`] says which applies.

pub mod bwrap;
pub mod cgroup;
mod compare;
mod process;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use bwrap::Bwrap;
pub use cgroup::Version as CgroupVersion;
use cgroup::{Budget, Cgroups};
pub use compare::{stdout_matches, value_matches};
pub use process::SANDBOX_PATH;

const RUNNER: &str = include_str!("runner.py");
/// runner.py's exit status for a solution that does not compile.
const EXIT_COMPILE_ERROR: i64 = 3;
/// The supervisor's exit status when the sandbox itself failed.
const EXIT_HARNESS_ERROR: i32 = 70;

/// APPS test cases: the `input_output` JSON of a problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestCases {
    pub inputs: Vec<Value>,
    pub outputs: Vec<Value>,
    /// Present for call-based problems: the function (or `Solution` method)
    /// to call with each input's arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fn_name: Option<String>,
}

impl TestCases {
    /// Parses APPS `input_output` JSON (also accepts an empty string as
    /// "no tests", which APPS uses for a few problems).
    pub fn from_json(json: &str) -> Result<Self> {
        if json.trim().is_empty() {
            return Ok(Self {
                inputs: Vec::new(),
                outputs: Vec::new(),
                fn_name: None,
            });
        }
        let cases: TestCases = serde_json::from_str(json).context(
            "APPS input_output is not JSON of the form {\"inputs\": [...], \"outputs\": [...]}",
        )?;
        if cases.inputs.len() != cases.outputs.len() {
            bail!(
                "APPS input_output has {} inputs but {} outputs",
                cases.inputs.len(),
                cases.outputs.len()
            );
        }
        if cases.fn_name.is_none() {
            for (i, v) in cases.inputs.iter().chain(&cases.outputs).enumerate() {
                if text_of(v).is_none() {
                    bail!(
                        "APPS input_output entry {i} of a standard-input problem is neither a string nor a list of strings"
                    );
                }
            }
        }
        Ok(cases)
    }

    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }
}

/// Standard-input cases hold a string, or (rarely) a list of lines.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(|lines| lines.join("\n")),
        _ => None,
    }
}

/// How one test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Pass,
    Fail,
    Timeout,
    RuntimeError,
    CompileError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Timeout => "timeout",
            Outcome::RuntimeError => "runtime-error",
            Outcome::CompileError => "compile-error",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One test's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    pub outcome: Outcome,
    /// A short reason for anything but a pass: the exception line, the
    /// signal, the limit that was hit.
    pub detail: String,
    pub elapsed: Duration,
}

/// Results of one program over a problem's tests, in test order. Shorter
/// than the test list when [`SandboxConfig::stop_at_first_failure`] is set or
/// the program does not compile (one `CompileError` stands for all tests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramResult {
    pub tests: Vec<TestResult>,
    /// How many tests the problem has.
    pub total: usize,
}

impl ProgramResult {
    /// Correct in the pass@k sense: every test ran and passed. A problem
    /// without tests cannot be passed.
    pub fn passed(&self) -> bool {
        self.total > 0
            && self.tests.len() == self.total
            && self.tests.iter().all(|t| t.outcome == Outcome::Pass)
    }

    /// Fraction of the problem's tests that passed (APPS "test case average").
    pub fn pass_fraction(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let passed = self
            .tests
            .iter()
            .filter(|t| t.outcome == Outcome::Pass)
            .count();
        passed as f64 / self.total as f64
    }

    /// The first outcome that is not a pass, or `Pass`.
    pub fn first_failure(&self) -> Outcome {
        self.tests
            .iter()
            .map(|t| t.outcome)
            .find(|o| *o != Outcome::Pass)
            .unwrap_or(Outcome::Pass)
    }
}

/// Sandbox limits. The defaults follow the APPS harness (4 s per test).
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The interpreter: a name looked up on the host's PATH and resolved to
    /// its real file (pyenv shims need an environment the sandbox does not
    /// pass), or a path. As root it must be runnable by `nobody`; for a
    /// name, the same name on [`SANDBOX_PATH`] is the fallback.
    pub python: PathBuf,
    /// Without root the sandbox cannot run programs as another user; this
    /// runs them as the caller instead (inside the namespaces, which hide
    /// the caller's files and processes; without them, the programs can
    /// read the caller's files and the environment of its processes).
    pub allow_same_user: bool,
    /// Where bubblewrap is missing or cannot create namespaces, run the
    /// programs without them instead of refusing: they can then read every
    /// file their user can (the tests' answers included), signal other
    /// programs of the same user and reach unix sockets.
    pub allow_without_namespaces: bool,
    /// The bubblewrap binary: a name (looked up on PATH, then on
    /// [`SANDBOX_PATH`]) or a path.
    pub bwrap: PathBuf,
    /// Wall-clock limit per test.
    pub timeout: Duration,
    /// RLIMIT_CPU per test; `None` is the wall-clock limit rounded up plus 1 s.
    pub cpu_seconds: Option<u64>,
    /// Memory of the program's processes together (the cgroup's limit,
    /// tmpfs files included), and of each one (RLIMIT_AS, address space).
    pub memory_bytes: u64,
    /// RLIMIT_FSIZE: largest file the program may write.
    pub file_size_bytes: u64,
    /// Size of each private tmpfs (/tmp, /var/tmp, /dev/shm).
    pub tmp_bytes: u64,
    /// Processes the program may run at once: the cgroup's `pids.max` and
    /// RLIMIT_NPROC inside the program's user namespace (where it counts
    /// the program's processes alone); without namespaces and cgroup,
    /// RLIMIT_NPROC, which counts every process of the user the program
    /// runs as (all concurrent programs together).
    pub max_processes: u64,
    /// Output beyond this many bytes is dropped and the test fails.
    pub max_output_bytes: usize,
    /// Stop a program's tests at the first non-pass (enough for pass@k).
    pub stop_at_first_failure: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            python: PathBuf::from("python3"),
            allow_same_user: false,
            allow_without_namespaces: false,
            bwrap: PathBuf::from("bwrap"),
            timeout: Duration::from_secs(4),
            cpu_seconds: None,
            memory_bytes: 1 << 30,
            file_size_bytes: 16 << 20,
            tmp_bytes: 64 << 20,
            max_processes: 64,
            max_output_bytes: 16 << 20,
            stop_at_first_failure: false,
        }
    }
}

/// Which network isolation the sandbox gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkIsolation {
    /// An empty network namespace plus the Python guard.
    NamespaceAndGuard,
    /// Only the Python-level guard (not root, or no network namespaces).
    GuardOnly,
}

/// What holds programs apart from the host and from each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isolation {
    /// Each test in namespaces of its own (bubblewrap): its own files only,
    /// its own processes only, no network, no host socket.
    pub namespaces: bool,
    /// The cgroup hierarchy holding each program's memory and process
    /// budget; `None`: per-process and per-user rlimits only.
    pub cgroup: Option<CgroupVersion>,
}

/// A configured sandbox. Cheap to share across threads (`&Sandbox` is
/// `Sync`): each test gets its own directory, processes, namespaces and
/// cgroup.
#[derive(Debug, Clone)]
pub struct Sandbox {
    config: SandboxConfig,
    python: PathBuf,
    /// The user programs run as; `None`: the caller (see `allow_same_user`).
    user: Option<u32>,
    net_namespace: bool,
    note: Option<String>,
    bwrap: Option<Arc<Bwrap>>,
    cgroups: Option<Arc<Cgroups>>,
    weaknesses: Vec<String>,
    base: Arc<BaseDir>,
}

/// How long bubblewrap and the interpreter may take to start a program
/// before its wall-clock limit starts (runner.py's start marker).
const SETUP: Duration = Duration::from_secs(10);

/// The sandbox user, `nobody`.
pub const NOBODY: u32 = 65534;

/// What the probe program imports: the interpreter must give the sandbox
/// user its standard library, not only its binary.
const PROBE: &str = "import json, fractions, heapq, typing, socket; print('ok')";

impl Sandbox {
    /// Chooses the user and the interpreter, and runs a trivial program
    /// through the whole sandbox once (with a network namespace when it can)
    /// so that a sandbox that cannot work fails here, in one line, rather
    /// than as a runtime error of every program.
    pub fn new(config: SandboxConfig) -> Result<Self> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root && !config.allow_same_user {
            bail!(
                "the pass@k sandbox needs root to run generated programs as nobody; as uid {} it could only run them as you, with access to your files and to the environment of your processes — run as root, or pass --sandbox-same-user to accept that",
                // SAFETY: as above.
                unsafe { libc::geteuid() }
            );
        }
        let user = root.then_some(NOBODY);
        let host_path = std::env::var_os("PATH").unwrap_or_default();
        let (python, note) = choose_python(&config.python, &host_path, user)?;
        if !root {
            // The caller's other processes stay readable to a same-user
            // program, but this one's environment (an API key) need not.
            // SAFETY: plain system call.
            unsafe {
                libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            }
        }
        let base = Arc::new(BaseDir::new()?);
        let bwrap = Bwrap::find(&config.bwrap, &python, config.tmp_bytes);
        let cgroups = Cgroups::discover();
        let mut sandbox = Self {
            config,
            python,
            user,
            net_namespace: false,
            note,
            bwrap: None,
            cgroups: None,
            weaknesses: Vec::new(),
            base,
        };
        let probe = TestCases {
            inputs: vec![Value::from("")],
            outputs: vec![Value::from("ok\n")],
            fn_name: None,
        };
        // Why the probe failed, or None when it passed.
        let fails = |sb: &Sandbox| -> Option<String> {
            match sb.run_test(PROBE, &probe, 0) {
                Ok(r) if r.outcome == Outcome::Pass => None,
                Ok(r) => Some(format!("{}: {}", r.outcome, r.detail)),
                Err(e) => Some(format!("{e:#}")),
            }
        };
        // Each layer is tried on its own, so one that cannot work here is
        // named, not blamed on another.
        let why_no_namespaces = match bwrap {
            Ok(b) => {
                sandbox.bwrap = Some(Arc::new(b));
                let why = fails(&sandbox);
                if why.is_some() {
                    sandbox.bwrap = None;
                }
                why.map(|w| {
                    format!(
                        "{} cannot set up namespaces here ({w})",
                        sandbox.config.bwrap.display()
                    )
                })
            }
            Err(why) => Some(why),
        };
        if let Some(why) = &why_no_namespaces {
            if !sandbox.config.allow_without_namespaces {
                bail!(
                    "the pass@k sandbox runs programs in namespaces of their own (bubblewrap), and cannot here: {why}; install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; it needs unprivileged user namespaces), or pass --sandbox-without-namespaces to run programs where they can read every file their user can, the tests' answers included"
                );
            }
            sandbox.weaknesses.push(format!(
                "no namespaces ({why}): programs can read every file their user can (the tests' answers included), reach unix sockets and signal other programs of their user, so they run one at a time"
            ));
        }
        let why_no_cgroups = match cgroups {
            Ok(c) => {
                sandbox.cgroups = Some(Arc::new(c));
                let why = fails(&sandbox);
                if why.is_some() {
                    sandbox.cgroups = None;
                }
                why.map(|w| format!("a test cannot join its cgroup: {w}"))
            }
            Err(why) => Some(why),
        };
        if let Some(why) = why_no_cgroups {
            let processes = if sandbox.bwrap.is_some() {
                format!(
                    "processes stay per program ({} at once, counted in its user namespace)",
                    sandbox.config.max_processes
                )
            } else {
                let user = match user {
                    Some(_) => "nobody",
                    None => "the caller",
                };
                format!(
                    "processes are limited per user ({} more running as {user}, every concurrent program together)",
                    sandbox.config.max_processes
                )
            };
            sandbox.weaknesses.push(format!(
                "no cgroup ({why}): memory is limited per process ({} MiB of address space each, not for the program's processes together); {processes}",
                sandbox.config.memory_bytes >> 20
            ));
        }
        if sandbox.bwrap.is_none() && root {
            // Without bubblewrap, root can still give the supervisor an
            // empty network namespace.
            sandbox.net_namespace = true;
            if fails(&sandbox).is_some() {
                sandbox.net_namespace = false;
            }
        }
        let r = sandbox
            .run_test(PROBE, &probe, 0)
            .context("the pass@k sandbox cannot start")?;
        if r.outcome != Outcome::Pass {
            bail!(
                "the pass@k sandbox does not work with {}: a trivial program ended with {} ({})",
                sandbox.python.display(),
                r.outcome,
                r.detail
            );
        }
        Ok(sandbox)
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The interpreter actually executed.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Why the interpreter is not the one named by the configuration, when
    /// it is not (e.g. a pyenv shim `nobody` cannot run).
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Whether programs run as `nobody` rather than as the calling user.
    pub fn drops_privileges(&self) -> bool {
        self.user.is_some()
    }

    pub fn network_isolation(&self) -> NetworkIsolation {
        if self.net_namespace || self.bwrap.is_some() {
            NetworkIsolation::NamespaceAndGuard
        } else {
            NetworkIsolation::GuardOnly
        }
    }

    pub fn isolation(&self) -> Isolation {
        Isolation {
            namespaces: self.bwrap.is_some(),
            cgroup: self.cgroups.as_ref().map(|c| c.version()),
        }
    }

    /// One line per protection this sandbox cannot give here (no
    /// namespaces, no cgroup), saying what follows; empty when all hold.
    pub fn weaknesses(&self) -> &[String] {
        &self.weaknesses
    }

    /// Runs `code` on every test of `tests`. Errors only when the sandbox
    /// itself fails (no temporary directory, cannot start Python); anything
    /// the program does is an [`Outcome`].
    pub fn run_program(&self, code: &str, tests: &TestCases) -> Result<ProgramResult> {
        let mut results = Vec::with_capacity(tests.len());
        for i in 0..tests.len() {
            let result = self.run_test(code, tests, i)?;
            let outcome = result.outcome;
            results.push(result);
            if outcome == Outcome::CompileError
                || (self.config.stop_at_first_failure && outcome != Outcome::Pass)
            {
                break;
            }
        }
        Ok(ProgramResult {
            tests: results,
            total: tests.len(),
        })
    }

    /// Runs `code` on test `index` of `tests`.
    pub fn run_test(&self, code: &str, tests: &TestCases, index: usize) -> Result<TestResult> {
        let (Some(input), Some(expected)) = (tests.inputs.get(index), tests.outputs.get(index))
        else {
            bail!(
                "test {index} does not exist: the problem has {} tests",
                tests.len()
            );
        };
        let (mode, stdin) = match &tests.fn_name {
            None => ("stdio", text_of(input).unwrap_or_default()),
            Some(_) => ("call", input.to_string()),
        };
        let (done, ending) = self.execute(code, mode, tests.fn_name.as_deref(), &stdin)?;
        classify(
            &done,
            expected,
            tests.fn_name.is_some(),
            self.config.timeout,
            ending,
        )
    }

    /// Runs `code` once through the whole sandbox with `stdin`, in `mode`
    /// (`stdio` or `call` of `fn_name`): how it ended, before classifying.
    fn execute(
        &self,
        code: &str,
        mode: &str,
        fn_name: Option<&str>,
        stdin: &str,
    ) -> Result<(process::Finished, Ending)> {
        let dir = self.base.test_dir(self.user)?;
        let solution = dir.path().join("solution.py");
        fs::write(&solution, code)
            .with_context(|| format!("cannot write {}", solution.display()))?;
        if let Some(uid) = self.user {
            std::os::unix::fs::chown(&solution, Some(uid), Some(uid))
                .with_context(|| format!("cannot chown {}", solution.display()))?;
        }
        let group = match &self.cgroups {
            Some(c) => Some(
                c.test_group(Budget {
                    memory_bytes: self.config.memory_bytes,
                    processes: self.config.max_processes + bwrap::OWN_PROCESSES,
                })
                .context("cannot create the test's cgroup")?,
            ),
            None => None,
        };
        let exec = self.bwrap.as_ref().map(|b| {
            let inner = json!({
                "role": "program",
                "mode": mode,
                "fn_name": fn_name,
                "solution": format!("{}/solution.py", bwrap::SOLUTION_DIR),
                // Counted in the program's own user namespace: its init,
                // the runner and whatever the program starts.
                "max_processes": self.config.max_processes + bwrap::OWN_PROCESSES,
            });
            let python = self.python.to_string_lossy().into_owned();
            b.command(
                dir.path(),
                &[
                    python,
                    "-I".into(),
                    "-S".into(),
                    "-c".into(),
                    RUNNER.into(),
                    inner.to_string(),
                ],
            )
        });
        let config = json!({
            "mode": mode,
            "fn_name": fn_name,
            "timeout_ms": self.config.timeout.as_millis() as u64,
            "setup_ms": SETUP.as_millis() as u64,
            "uid": self.user,
            "cap": self.config.max_output_bytes,
            "solution": "solution.py",
            "cgroups": group.as_ref().map(|g| g.procs_files()).unwrap_or_default(),
            "exec": exec,
        });
        let limits = process::Limits {
            wall: self.config.timeout,
            setup: SETUP,
            cpu_seconds: self
                .config
                .cpu_seconds
                .unwrap_or_else(|| self.config.timeout.as_secs_f64().ceil() as u64 + 1),
            address_space_bytes: self.config.memory_bytes,
            file_size_bytes: self.config.file_size_bytes,
            // RLIMIT_NPROC counts every task of a user. Under bubblewrap the
            // program sets it inside its user namespace, where the count
            // is its own processes' (since Linux 5.14), and the pids
            // cgroup bounds it too: the per-user count stays unlimited so
            // one program's fork bomb cannot starve the others. Without
            // either, the per-user count is all there is: as nobody, the
            // budget; as the caller, the caller's tasks now plus the budget.
            processes: if group.is_some() || self.bwrap.is_some() {
                None
            } else if self.user.is_some() {
                Some(self.config.max_processes + bwrap::OWN_PROCESSES)
            } else {
                Some(tasks_of_caller() + self.config.max_processes)
            },
            output_bytes: self.config.max_output_bytes,
        };
        let done = process::run(
            &self.python,
            RUNNER,
            &[config.to_string()],
            dir.path(),
            stdin.as_bytes(),
            &limits,
            process::Isolation {
                net_namespace: self.net_namespace,
            },
        )?;
        let oom = group.as_ref().is_some_and(|g| g.oom_killed());
        drop(group);
        Ok((
            done,
            Ending {
                through_bwrap: self.bwrap.is_some(),
                oom,
            },
        ))
    }
}

/// The tasks (threads included, as RLIMIT_NPROC counts them) the caller's
/// real user runs now.
fn tasks_of_caller() -> u64 {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() }.to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    let mut tasks = 0;
    for entry in entries.flatten() {
        let Ok(status) = fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>())
        };
        let mine = field("Uid:").is_some_and(|ids| ids.first() == Some(&uid.as_str()));
        if mine {
            tasks += field("Threads:")
                .and_then(|v| v.first().and_then(|n| n.parse::<u64>().ok()))
                .unwrap_or(1);
        }
    }
    tasks
}

/// What the host knows about how the program's process ended beyond the
/// supervisor's report.
#[derive(Debug, Clone, Copy, Default)]
struct Ending {
    /// bubblewrap passes a signal's death on as exit status 128 + signal.
    through_bwrap: bool,
    /// The kernel killed a process of the test's cgroup for memory.
    oom: bool,
}

/// The supervisor's report (runner.py writes one JSON line on fd 3).
#[derive(Debug, Deserialize)]
struct Report {
    #[serde(default)]
    harness_error: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    signal: Option<i32>,
    /// What the program's process handed over: `{"value": ...}` or
    /// `{"compile_error": "..."}` (its own words, so only ever its answer).
    #[serde(default)]
    result: String,
    #[serde(default)]
    result_truncated: bool,
}

fn classify(
    done: &process::Finished,
    expected: &Value,
    call: bool,
    timeout: Duration,
    ending: Ending,
) -> Result<TestResult> {
    let stderr = String::from_utf8_lossy(&done.stderr);
    let stdout = String::from_utf8_lossy(&done.stdout);
    let result = |outcome, detail: String| {
        Ok(TestResult {
            outcome,
            detail,
            elapsed: done.elapsed,
        })
    };
    // The supervisor writes exactly one line and exits: anything else means
    // something else wrote on the channel (only a program running as the
    // caller could) or killed the supervisor, and nothing in it counts.
    let report_text = String::from_utf8_lossy(&done.report);
    let one_line = report_text.ends_with('\n') && report_text.matches('\n').count() == 1;
    let report: Option<Report> = (one_line
        && (done.status.success() || done.status.code() == Some(EXIT_HARNESS_ERROR)))
    .then(|| serde_json::from_str(report_text.trim_end()).ok())
    .flatten();
    let Some(report) = report else {
        if done.backstop {
            return result(
                Outcome::Timeout,
                format!("wall-clock limit {timeout:?} exceeded; the sandbox supervisor had to be killed"),
            );
        }
        // Only a same-user program can reach the supervisor (and kill it).
        return result(
            Outcome::RuntimeError,
            format!(
                "the sandbox supervisor ended without a report ({}){}",
                done.status,
                last_line(&stderr)
            ),
        );
    };
    if let Some(e) = report.harness_error {
        return Err(anyhow!("the pass@k sandbox failed: {e}"));
    }
    let handed: Option<serde_json::Map<String, Value>> = serde_json::from_str(&report.result).ok();
    let handed_field = |key: &str| handed.as_ref().and_then(|m| m.get(key));
    match report.status.as_deref() {
        Some("timeout") => {
            return result(
                Outcome::Timeout,
                format!("wall-clock limit {timeout:?} exceeded"),
            )
        }
        Some("signaled") | Some("exited") => {}
        other => bail!("the pass@k sandbox sent a report without a known status: {other:?}"),
    }
    let code = report.code.unwrap_or(-1);
    // bubblewrap's init exits with 128 + the signal that killed the
    // program (a program could exit with such a status itself and be
    // called killed: either way it failed).
    let signal = match report.status.as_deref() {
        Some("signaled") => Some(report.signal.unwrap_or(0)),
        _ if ending.through_bwrap && (129..=128 + 64).contains(&code) => Some(code as i32 - 128),
        _ => None,
    };
    if let Some(sig) = signal {
        if sig == libc::SIGXCPU {
            return result(Outcome::Timeout, "CPU time limit exceeded".to_string());
        }
        if ending.oom {
            return result(
                Outcome::RuntimeError,
                "memory limit exceeded (the program's processes together)".to_string(),
            );
        }
        return result(
            Outcome::RuntimeError,
            format!("killed by signal {sig}{}", last_line(&stderr)),
        );
    }
    if code == EXIT_COMPILE_ERROR {
        if let Some(Value::String(message)) = handed_field("compile_error") {
            return result(Outcome::CompileError, message.clone());
        }
    }
    if code != 0 {
        let why = last_line(&stderr);
        return result(Outcome::RuntimeError, format!("exit status {code}{why}"));
    }
    if done.output_truncated {
        return result(Outcome::Fail, "output exceeds the size limit".to_string());
    }
    if call {
        if report.result_truncated {
            return result(
                Outcome::Fail,
                "the return value exceeds the size limit".to_string(),
            );
        }
        let Some(got) = handed_field("value") else {
            return result(Outcome::RuntimeError, "no return value".to_string());
        };
        return if value_matches(got, expected) {
            result(Outcome::Pass, String::new())
        } else {
            result(
                Outcome::Fail,
                format!(
                    "returned {}, expected {}",
                    clip(&got.to_string()),
                    clip(&expected.to_string())
                ),
            )
        };
    }
    let want = text_of(expected).unwrap_or_default();
    if stdout_matches(&stdout, &want) {
        result(Outcome::Pass, String::new())
    } else {
        result(
            Outcome::Fail,
            format!("printed {:?}, expected {:?}", clip(&stdout), clip(&want)),
        )
    }
}

fn last_line(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| format!(": {}", clip(l)))
        .unwrap_or_default()
}

fn clip(s: &str) -> String {
    const MAX: usize = 200;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

/// The interpreter programs run with, and a note when it is not the one
/// `python` names. `host_path` is the caller's PATH (a parameter so tests
/// can build the pyenv situation).
fn choose_python(
    python: &Path,
    host_path: &std::ffi::OsStr,
    user: Option<u32>,
) -> Result<(PathBuf, Option<String>)> {
    let bare = python.components().count() == 1;
    let name = python.to_string_lossy().into_owned();
    let first = if bare {
        let found = process::which_in(&name, host_path)
            .ok_or_else(|| anyhow!("{name} not found on PATH"))?;
        real_interpreter(&found)?
    } else {
        python.to_path_buf()
    };
    let who = match user {
        Some(uid) => format!("the sandbox user nobody (uid {uid})"),
        None => "the sandbox".to_string(),
    };
    let why_first = match process::try_python(&first, PROBE, user) {
        Ok(()) => return Ok((first, None)),
        Err(why) => why,
    };
    if bare {
        if let Some(fallback) = process::which_in(&name, SANDBOX_PATH.as_ref()) {
            if fallback != first && process::try_python(&fallback, PROBE, user).is_ok() {
                let note = format!(
                    "{name} on PATH is {}, which {who} cannot run ({why_first}); programs run with {}",
                    first.display(),
                    fallback.display()
                );
                return Ok((fallback, Some(note)));
            }
        }
    }
    bail!(
        "{who} cannot run {} ({why_first}){}; pass --python an interpreter it can run, e.g. /usr/bin/python3",
        first.display(),
        if bare {
            format!(" and no {name} on {SANDBOX_PATH} works either")
        } else {
            String::new()
        }
    )
}

/// The real interpreter behind `found`: a shim on PATH may be a script that
/// needs environment variables the sandbox does not pass, so ask the
/// interpreter itself (as the caller, with the caller's environment).
fn real_interpreter(found: &Path) -> Result<PathBuf> {
    let out = std::process::Command::new(found)
        .args([
            "-I",
            "-S",
            "-c",
            "import sys; sys.stdout.write(sys.executable)",
        ])
        .output()
        .with_context(|| format!("cannot run {}", found.display()))?;
    if !out.status.success() {
        bail!(
            "{} -I -S fails: {}",
            found.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let real = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(if real.is_absolute() {
        real
    } else {
        found.to_path_buf()
    })
}

/// 128 random bits as hex: directory names no other program can guess.
fn random_name() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The parent of every test directory of one sandbox: owned by the caller,
/// mode 0711, so the sandbox user can enter a test directory whose name it
/// was given but cannot list the others. Removed with the sandbox.
#[derive(Debug)]
struct BaseDir(PathBuf);

impl BaseDir {
    fn new() -> Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let base = std::env::temp_dir();
        remove_stale_bases(&base);
        let path = base.join(format!(
            "{BASE_PREFIX}{}-{}",
            std::process::id(),
            random_name()
        ));
        fs::DirBuilder::new()
            .mode(0o711)
            .create(&path)
            .with_context(|| format!("cannot create a sandbox directory in {}", base.display()))?;
        // The umask may have removed the execute bits.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o711))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
        Ok(Self(path))
    }

    /// A fresh directory for one test, private to `user` (or the caller).
    fn test_dir(&self, user: Option<u32>) -> Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        let path = self.0.join(random_name());
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let dir = TempDir(path);
        if let Some(uid) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid))
                .with_context(|| format!("cannot chown {}", dir.path().display()))?;
        }
        Ok(dir)
    }
}

const BASE_PREFIX: &str = "marlhf-sandbox-";

/// Removes the sandbox directories of processes that no longer run (a
/// killed evaluation cannot remove its own).
fn remove_stale_bases(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(BASE_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            let modified = entry.metadata().and_then(|m| m.modified()).ok();
            if !marlhf_data::atomic::may_still_write(pid, modified) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl Drop for BaseDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A directory removed (with whatever the program left in it) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests;
