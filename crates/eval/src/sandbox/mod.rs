//! Running a generated Python program against APPS test cases in a sandboxed
//! child process.
//!
//! Each test runs `python3 -I -S runner.py` (isolated mode, no site
//! packages) in a fresh temporary directory with an environment of PATH
//! only, in a new session whose whole process group is killed when the test
//! ends or its wall-clock limit passes, under RLIMIT_CPU, RLIMIT_AS (memory),
//! RLIMIT_FSIZE, RLIMIT_NPROC (not enforced for root) and no core dumps.
//!
//! Network: the runner always replaces Python's socket constructors and
//! resolvers with ones that raise `PermissionError` before the solution
//! runs. When running as root with a working `unshare`, the child also
//! gets an empty network namespace (`unshare --net`), which is a real
//! boundary; [`Sandbox::network_isolation`] says which applies.
//!
//! Privileges: as root, the program runs as `nobody` (uid/gid 65534, via
//! `unshare --setuid/--setgid`) when the interpreter is reachable by that
//! user; a pyenv interpreter under /root usually is not, so point
//! [`SandboxConfig::python`] at e.g. /usr/bin/python3 to get this.
//! [`Sandbox::drops_privileges`] says whether it applies.
//!
//! Not contained: a descendant that calls setsid() leaves the process group;
//! it keeps the CPU, memory and network limits, but outlives the test.

mod compare;
mod process;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use compare::{stdout_matches, value_matches};

const RUNNER: &str = include_str!("runner.py");
const EXIT_COMPILE_ERROR: i32 = 3;

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
    /// The interpreter; resolved on the host's PATH and to its real file, so
    /// wrappers such as pyenv shims (which need their environment) are skipped.
    pub python: PathBuf,
    /// Wall-clock limit per test.
    pub timeout: Duration,
    /// RLIMIT_CPU per test; `None` is the wall-clock limit rounded up plus 1 s.
    pub cpu_seconds: Option<u64>,
    /// RLIMIT_AS: address space, which bounds memory.
    pub memory_bytes: u64,
    /// RLIMIT_FSIZE: largest file the program may write.
    pub file_size_bytes: u64,
    /// RLIMIT_NPROC (counts all processes of the user; not enforced for root).
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
            timeout: Duration::from_secs(4),
            cpu_seconds: None,
            memory_bytes: 1 << 30,
            file_size_bytes: 16 << 20,
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
    /// An empty network namespace (`unshare --net`) plus the Python guard.
    NamespaceAndGuard,
    /// Only the Python-level guard (not root, or no working `unshare`).
    GuardOnly,
}

/// A configured sandbox. Cheap to share across threads (`&Sandbox` is
/// `Sync`): each test gets its own directory and process.
#[derive(Debug, Clone)]
pub struct Sandbox {
    config: SandboxConfig,
    python: PathBuf,
    unshare: Option<Unshare>,
}

#[derive(Debug, Clone)]
struct Unshare {
    path: PathBuf,
    /// Run the program as `nobody`.
    drop_to_nobody: bool,
}

const NOBODY: u32 = 65534;

impl Sandbox {
    /// Checks the interpreter works and probes for `unshare --net`.
    pub fn new(config: SandboxConfig) -> Result<Self> {
        let python = resolve_python(&config.python)?;
        let unshare = probe_unshare(&python);
        Ok(Self {
            config,
            python,
            unshare,
        })
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The interpreter actually executed.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Whether programs run as `nobody` rather than as the calling user.
    pub fn drops_privileges(&self) -> bool {
        self.unshare.as_ref().is_some_and(|u| u.drop_to_nobody)
    }

    pub fn network_isolation(&self) -> NetworkIsolation {
        if self.unshare.is_some() {
            NetworkIsolation::NamespaceAndGuard
        } else {
            NetworkIsolation::GuardOnly
        }
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
        let nonce = nonce();
        let (stdin, mut args) = match &tests.fn_name {
            None => (
                text_of(input).unwrap_or_default(),
                vec!["stdio".to_string(), nonce.clone()],
            ),
            Some(name) => (
                input.to_string(),
                vec!["call".to_string(), nonce.clone(), name.clone()],
            ),
        };
        let dir = TempDir::new()?;
        fs::write(dir.path().join("solution.py"), code)
            .with_context(|| format!("cannot write into {}", dir.path().display()))?;
        fs::write(dir.path().join("runner.py"), RUNNER)
            .with_context(|| format!("cannot write into {}", dir.path().display()))?;
        if self.drops_privileges() {
            dir.give_to(NOBODY)?;
        }

        let mut full = vec![
            self.python.to_string_lossy().into_owned(),
            "-I".to_string(),
            "-S".to_string(),
            "runner.py".to_string(),
        ];
        full.append(&mut args);
        let (program, argv) = match &self.unshare {
            Some(unshare) => {
                let mut argv = unshare_args(unshare.drop_to_nobody);
                argv.extend(full);
                (unshare.path.clone(), argv)
            }
            None => (self.python.clone(), full.split_off(1)),
        };
        let limits = process::Limits {
            wall: self.config.timeout,
            cpu_seconds: self
                .config
                .cpu_seconds
                .unwrap_or_else(|| self.config.timeout.as_secs_f64().ceil() as u64 + 1),
            address_space_bytes: self.config.memory_bytes,
            file_size_bytes: self.config.file_size_bytes,
            processes: self.config.max_processes,
            output_bytes: self.config.max_output_bytes,
        };
        let done = process::run(&program, &argv, dir.path(), stdin.as_bytes(), &limits)?;
        Ok(classify(&done, expected, tests.fn_name.is_some(), &nonce))
    }
}

fn classify(done: &process::Finished, expected: &Value, call: bool, nonce: &str) -> TestResult {
    let stderr = String::from_utf8_lossy(&done.stderr);
    let stdout = String::from_utf8_lossy(&done.stdout);
    let result = |outcome, detail: String| TestResult {
        outcome,
        detail,
        elapsed: done.elapsed,
    };
    let compile_marker = format!("MARLHF-COMPILE-ERROR {nonce} ");
    if let Some(line) = stderr.lines().find(|l| l.starts_with(&compile_marker)) {
        if done.status.code() == Some(EXIT_COMPILE_ERROR) {
            return result(
                Outcome::CompileError,
                line[compile_marker.len()..].to_string(),
            );
        }
    }
    if done.timed_out {
        return result(
            Outcome::Timeout,
            format!("wall-clock limit {:?} exceeded", done.elapsed),
        );
    }
    if let Some(sig) = process::signal_of(&done.status) {
        if sig == libc::SIGXCPU {
            return result(Outcome::Timeout, "CPU time limit exceeded".to_string());
        }
        return result(
            Outcome::RuntimeError,
            format!("killed by signal {sig}{}", last_line(&stderr)),
        );
    }
    if done.status.code() != Some(0) {
        let code = done.status.code().unwrap_or(-1);
        let why = last_line(&stderr);
        return result(Outcome::RuntimeError, format!("exit status {code}{why}"));
    }
    if done.output_truncated {
        return result(Outcome::Fail, "output exceeds the size limit".to_string());
    }
    if call {
        let marker = format!("MARLHF-RESULT {nonce} ");
        let Some(json) = stdout.lines().rev().find_map(|l| l.strip_prefix(&marker)) else {
            return result(Outcome::RuntimeError, "no return value".to_string());
        };
        return match serde_json::from_str::<Value>(json) {
            Ok(got) if value_matches(&got, expected) => result(Outcome::Pass, String::new()),
            Ok(got) => result(
                Outcome::Fail,
                format!(
                    "returned {}, expected {}",
                    clip(&got.to_string()),
                    clip(&expected.to_string())
                ),
            ),
            Err(e) => result(
                Outcome::RuntimeError,
                format!("unreadable return value: {e}"),
            ),
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

fn resolve_python(python: &Path) -> Result<PathBuf> {
    let found = if python.components().count() > 1 {
        python.to_path_buf()
    } else {
        process::which(&python.to_string_lossy())
            .with_context(|| format!("{} not found on PATH", python.display()))?
    };
    // Ask the interpreter for its real path: a shim on PATH may be a script
    // that needs environment variables the sandbox does not pass.
    let out = std::process::Command::new(&found)
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
    Ok(if real.is_absolute() { real } else { found })
}

fn unshare_args(drop_to_nobody: bool) -> Vec<String> {
    let mut args = vec!["--net".to_string()];
    if drop_to_nobody {
        args.extend([format!("--setgid={NOBODY}"), format!("--setuid={NOBODY}")]);
    }
    args.push("--".to_string());
    args
}

fn probe_unshare(python: &Path) -> Option<Unshare> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let path = process::which("unshare")?;
    let works = |drop_to_nobody: bool| {
        std::process::Command::new(&path)
            .args(unshare_args(drop_to_nobody))
            .arg(python)
            .args(["-I", "-S", "-c", "pass"])
            .current_dir(std::env::temp_dir())
            .env_clear()
            .env("PATH", process::SANDBOX_PATH)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    [true, false]
        .into_iter()
        .find(|&drop_to_nobody| works(drop_to_nobody))
        .map(|drop_to_nobody| Unshare {
            path: path.clone(),
            drop_to_nobody,
        })
}

fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:x}{:x}", std::process::id(), nanos, count)
}

/// A directory removed (with whatever the program left in it) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let path = base.join(format!("marlhf-sandbox-{}", nonce()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Self(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot create a sandbox directory in {}", base.display())
                    })
                }
            }
        }
        bail!(
            "cannot create a unique sandbox directory in {}",
            base.display()
        )
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Hands the directory and its files to `uid` so a program running as
    /// that user can work in it.
    fn give_to(&self, uid: u32) -> Result<()> {
        use std::os::unix::fs::chown;
        chown(&self.0, Some(uid), Some(uid))
            .with_context(|| format!("cannot chown {}", self.0.display()))?;
        for entry in fs::read_dir(&self.0)? {
            let path = entry?.path();
            chown(&path, Some(uid), Some(uid))
                .with_context(|| format!("cannot chown {}", path.display()))?;
        }
        Ok(())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests;
