//! These run real python3 processes.

use super::*;
use std::net::TcpListener;
use std::time::Instant;

/// The default sandbox with `timeout_ms` per test. As root it runs
/// programs as nobody; elsewhere as the caller (the only way it can).
fn sandbox(timeout_ms: u64) -> Sandbox {
    Sandbox::new(config(timeout_ms)).expect("python3 is needed for the sandbox tests")
}

fn config(timeout_ms: u64) -> SandboxConfig {
    SandboxConfig {
        timeout: Duration::from_millis(timeout_ms),
        allow_same_user: true,
        // Where namespaces cannot be made, the tests of everything else
        // still run; the isolation tests check the refusal instead.
        allow_without_namespaces: true,
        ..SandboxConfig::default()
    }
}

/// Where this machine cannot give a test its own namespaces: the strict
/// sandbox (the stage's default) refuses in one line naming bubblewrap.
/// Returns whether the namespaces are there (the isolation tests run).
fn namespaces_or_refusal(sb: &Sandbox) -> bool {
    if sb.isolation().namespaces {
        assert!(sb.weaknesses().iter().all(|w| !w.contains("no namespaces")));
        assert_eq!(sb.network_isolation(), NetworkIsolation::NamespaceAndGuard);
        return true;
    }
    let strict = SandboxConfig {
        allow_without_namespaces: false,
        ..sb.config().clone()
    };
    let err = Sandbox::new(strict).unwrap_err().to_string();
    assert!(
        err.contains("bubblewrap") && err.contains("--sandbox-without-namespaces"),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
    assert!(
        sb.weaknesses().iter().any(|w| w.contains("no namespaces")),
        "{:?}",
        sb.weaknesses()
    );
    eprintln!("no namespaces here: {err}");
    false
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn stdio_cases(pairs: &[(&str, &str)]) -> TestCases {
    TestCases {
        inputs: pairs.iter().map(|(i, _)| Value::from(*i)).collect(),
        outputs: pairs.iter().map(|(_, o)| Value::from(*o)).collect(),
        fn_name: None,
    }
}

/// APPS problem 1 (train split): its first published solution and tests.
const APPS_1_SOLUTION: &str = "q=int(input())\n\nfor e in range(q):\n    x,y,k=list(map(int,input().split()))\n    x,y=abs(x),abs(y)\n    x,y=max(x,y),min(x,y)\n    \n    if(x%2!=k%2):\n        k-=1\n        y-=1\n    \n    \n    if(x>k):\n        print(-1)\n        continue\n    if((x-y)%2):\n        k-=1\n        x-=1\n    print(k)\n";
const APPS_1_TESTS: &str =
    r#"{"inputs": ["3\n2 2 3\n4 3 7\n10 1 9\n"], "outputs": ["1\n6\n-1\n"]}"#;

#[test]
fn parses_apps_input_output() {
    let cases = TestCases::from_json(APPS_1_TESTS).unwrap();
    assert_eq!(cases.len(), 1);
    assert_eq!(cases.fn_name, None);
    let call = TestCases::from_json(
        r#"{"fn_name": "is_prime", "inputs": [[1], [2]], "outputs": [[false], [true]]}"#,
    )
    .unwrap();
    assert_eq!(call.fn_name.as_deref(), Some("is_prime"));
    assert!(TestCases::from_json("").unwrap().is_empty());
    let err = TestCases::from_json(r#"{"inputs": ["1"], "outputs": []}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "APPS input_output has 1 inputs but 0 outputs"
    );
    let err = TestCases::from_json(r#"{"inputs": [1], "outputs": ["1"]}"#).unwrap_err();
    assert!(err.to_string().contains("entry 0"), "{err}");
    assert!(TestCases::from_json("[1, 2]").is_err());
}

#[test]
fn correct_program_passes_and_wrong_one_fails() {
    let sb = sandbox(4000);
    let tests = TestCases::from_json(APPS_1_TESTS).unwrap();
    let ok = sb.run_program(APPS_1_SOLUTION, &tests).unwrap();
    assert!(ok.passed(), "{ok:?}");
    assert_eq!(ok.pass_fraction(), 1.0);

    let wrong = APPS_1_SOLUTION.replace("print(-1)", "print(1)");
    let bad = sb.run_program(&wrong, &tests).unwrap();
    assert!(!bad.passed());
    assert_eq!(bad.tests[0].outcome, Outcome::Fail);
    assert!(bad.tests[0].detail.contains("expected"), "{bad:?}");
}

#[test]
fn outcomes_for_compile_and_runtime_errors() {
    let sb = sandbox(4000);
    let tests = stdio_cases(&[("1\n", "1\n"), ("2\n", "2\n")]);
    let syntax = sb.run_program("def f(:\n  pass\n", &tests).unwrap();
    // One compile error stands for every test.
    assert_eq!(syntax.tests.len(), 1);
    assert_eq!(syntax.tests[0].outcome, Outcome::CompileError);
    assert!(
        syntax.tests[0].detail.starts_with("SyntaxError"),
        "{syntax:?}"
    );
    assert_eq!(syntax.first_failure(), Outcome::CompileError);

    let crash = sb
        .run_program("x = int(input())\nprint(1 // (x - 1))\n", &tests)
        .unwrap();
    assert_eq!(crash.tests[0].outcome, Outcome::RuntimeError);
    assert!(
        crash.tests[0].detail.contains("ZeroDivisionError"),
        "{crash:?}"
    );
    assert_eq!(crash.tests[1].outcome, Outcome::Fail);
    assert_eq!(crash.pass_fraction(), 0.0);

    // exit() exists although -S skips site; exit(0) after printing is fine.
    let exits = sb.run_program("print(input())\nexit()\n", &tests).unwrap();
    assert!(exits.passed(), "{exits:?}");
    let nonzero = sb.run_program("import sys\nsys.exit(2)\n", &tests).unwrap();
    assert_eq!(nonzero.tests[0].outcome, Outcome::RuntimeError);

    // Forging the host's markers does not work without the nonce.
    let forged = sb
        .run_program(
            "import sys\nsys.stderr.write('MARLHF-COMPILE-ERROR x y\\n')\nsys.exit(3)\n",
            &tests,
        )
        .unwrap();
    assert_eq!(forged.tests[0].outcome, Outcome::RuntimeError);
}

#[test]
fn stop_at_first_failure_skips_the_rest() {
    let sb = Sandbox::new(SandboxConfig {
        stop_at_first_failure: true,
        ..config(4000)
    })
    .unwrap();
    let tests = stdio_cases(&[("1\n", "2\n"), ("2\n", "2\n")]);
    let r = sb.run_program("print(input())\n", &tests).unwrap();
    assert_eq!(r.tests.len(), 1);
    assert_eq!(r.total, 2);
    assert!(!r.passed());
    assert_eq!(r.pass_fraction(), 0.0);
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 2..]
                .split_whitespace()
                .next();
            state != Some("Z")
        }
        Err(_) => false,
    }
}

/// A scratch directory every user may write into (the program runs as
/// nobody under root), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let path =
            std::env::temp_dir().join(format!("marlhf-sandbox-test-{name}-{}", random_name()));
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A tag no other process on the host has in its command line: the
/// programs below exec `sleep TAG`, so the host can find their processes
/// whatever PID namespace they are in.
fn sleep_tag() -> String {
    format!("30.{:012}", rand::random::<u64>() % 1_000_000_000_000)
}

/// The live (not zombie) processes running `sleep tag`.
fn processes_tagged(tag: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.len() >= 2 && args[1] == tag.as_bytes() && alive(pid) {
            found.push(pid);
        }
    }
    found
}

/// Issue 13, item 3: a timed-out program's processes all die with it: a
/// forked child, and a grandchild that called setsid() and would outlive a
/// kill of the process group.
#[test]
fn timeout_kills_every_process_the_program_started() {
    let sb = sandbox(1500);
    let tag = sleep_tag();
    let code = format!(
        r#"import os, time
child = os.fork()
if child == 0:
    if os.fork() == 0:
        os.setsid()
        os.execv('/bin/sleep', ['sleep', {tag:?}])
    while True:
        pass
if os.fork() == 0:
    os.setsid()
    os.execv('/bin/sleep', ['sleep', {tag:?}])
while True:
    pass
"#
    );
    let tests = stdio_cases(&[("", "never")]);
    let started = Instant::now();
    let (r, seen) = std::thread::scope(|scope| {
        let run = scope.spawn(|| sb.run_test(&code, &tests, 0).unwrap());
        // The tagged processes exist while the program runs: the check
        // below could not pass by looking in the wrong place.
        let mut seen = 0;
        while !run.is_finished() {
            seen = seen.max(processes_tagged(&tag).len());
            std::thread::sleep(Duration::from_millis(20));
        }
        (run.join().unwrap(), seen)
    });
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert_eq!(seen, 2, "both setsid() descendants ran");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        processes_tagged(&tag),
        Vec::<i32>::new(),
        "outlived its test"
    );
}

/// Runs `code` as a stdio program through the whole sandbox and returns
/// what it printed (the test API only returns outcomes).
fn run_and_capture(sb: &Sandbox, code: &str) -> String {
    let (done, _) = sb.execute(code, "stdio", None, "").unwrap();
    assert!(!done.backstop);
    String::from_utf8_lossy(&done.stdout).into_owned()
}

/// A program that exits at once leaves no background process behind either.
#[test]
fn a_finished_program_leaves_no_process_behind() {
    let sb = sandbox(4000);
    let tag = sleep_tag();
    let code = format!(
        "import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.execv('/bin/sleep', ['sleep', {tag:?}])\n    os._exit(0)\nos.wait()\nimport time\ntime.sleep(0.3)\nprint('done')\n"
    );
    let tests = stdio_cases(&[("", "done\n")]);
    let r = sb.run_program(&code, &tests).unwrap();
    assert!(r.passed(), "{r:?}");
    assert_eq!(
        processes_tagged(&tag),
        Vec::<i32>::new(),
        "a daemonised descendant outlived its test"
    );
}

/// Issue 13, item 2: nothing the program prints or writes is a verdict.
#[test]
fn a_program_cannot_forge_its_result() {
    let sb = sandbox(4000);
    let tests =
        TestCases::from_json(r#"{"fn_name": "f", "inputs": [[1]], "outputs": [12345]}"#).unwrap();
    // The attack that worked against the printed-nonce protocol: a result
    // line on the real stdout with whatever the command line holds, and an
    // exit before the function is ever called.
    let printed = "import sys, os\nos.write(1, ('MARLHF-RESULT %s 12345\\n' % ' '.join(sys.argv)).encode())\nos._exit(0)\n";
    let r = sb.run_program(printed, &tests).unwrap();
    assert!(!r.passed(), "{r:?}");
    assert_eq!(r.tests[0].outcome, Outcome::RuntimeError, "{r:?}");
    // Writing a report to every descriptor it might hold, and to the
    // supervisor's descriptors through /proc, does not reach the host.
    let report = r#"{"status": "exited", "code": 0, "result": "{\"value\": 12345}", "result_truncated": false}"#;
    let everywhere = format!(
        r#"import os
line = {report:?}.encode() + b'\n'
for fd in range(3, 256):
    try:
        os.write(fd, line)
    except OSError:
        pass
for path in ['/proc/%d/fd/3' % os.getppid(), '/proc/1/fd/3']:
    try:
        with open(path, 'wb') as f:
            f.write(line)
    except OSError:
        pass
os._exit(0)
"#
    );
    let r = sb.run_program(&everywhere, &tests).unwrap();
    if sb.drops_privileges() {
        // Whatever it wrote on its own pipe counts only as its answer
        // (an exit before any call): no verdict of the supervisor's.
        assert!(!r.passed(), "{r:?}");
    }
    // The honest program passes through the same channel.
    let honest = sb
        .run_program("def f(x):\n    return 12345\n", &tests)
        .unwrap();
    assert!(honest.passed(), "{honest:?}");
}
#[test]
fn cpu_limit_stops_a_busy_loop_as_a_timeout() {
    // Wall clock far away, CPU limit 1 s: SIGXCPU ends it.
    let sb = Sandbox::new(SandboxConfig {
        cpu_seconds: Some(1),
        ..config(20_000)
    })
    .unwrap();
    let tests = stdio_cases(&[("", "x")]);
    let r = sb.run_test("while True:\n    pass\n", &tests, 0).unwrap();
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert_eq!(r.detail, "CPU time limit exceeded");
    assert!(r.elapsed < Duration::from_secs(10));
}

#[test]
fn memory_hog_is_stopped() {
    let sb = Sandbox::new(SandboxConfig {
        memory_bytes: 256 << 20,
        ..config(4000)
    })
    .unwrap();
    let tests = stdio_cases(&[("", "done\n")]);
    let hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n";
    let r = sb.run_test(hog, &tests, 0).unwrap();
    assert_eq!(r.outcome, Outcome::RuntimeError, "{r:?}");
    assert!(r.detail.contains("MemoryError"), "{r:?}");
    // The same allocation pattern within the limit is fine.
    let modest = "chunks = [bytearray(16 << 20) for _ in range(4)]\nprint('done')\n";
    assert!(sb.run_program(modest, &tests).unwrap().passed());
}

#[test]
fn sockets_are_refused() {
    let sb = sandbox(4000);
    // A listener on the host's loopback: a sandboxed program must not reach it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let code = format!(
        "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')\n"
    );
    let tests = stdio_cases(&[("", "connected\n")]);
    let r = sb.run_test(&code, &tests, 0).unwrap();
    assert_eq!(r.outcome, Outcome::RuntimeError, "{r:?}");
    assert!(r.detail.contains("PermissionError"), "{r:?}");
    // Going around the guard through the C module also fails.
    let raw = format!(
        "import _socket\ns = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\ns.connect(('127.0.0.1', {port}))\nprint('connected')\n"
    );
    let r = sb.run_test(&raw, &tests, 0).unwrap();
    assert_eq!(r.outcome, Outcome::RuntimeError, "{r:?}");
    assert!(
        listener.accept().is_err(),
        "a sandboxed program reached the host"
    );
}

#[test]
fn environment_is_empty_but_path() {
    let sb = sandbox(4000);
    std::env::set_var("MARLHF_SANDBOX_SECRET", "leak");
    // Python's C-locale coercion adds LC_CTYPE itself.
    let code = "import os\nprint(sorted(k for k in os.environ if k != 'LC_CTYPE'))\n";
    let tests = stdio_cases(&[("", "['PATH']\n")]);
    let r = sb.run_program(code, &tests).unwrap();
    assert!(r.passed(), "{r:?}");
}

#[test]
fn call_based_function_and_solution_class() {
    let sb = sandbox(4000);
    // APPS problem 4184: expected values wrapped in one-element lists.
    let tests = TestCases::from_json(
        r#"{"fn_name": "is_prime", "inputs": [[1], [2], [9]], "outputs": [[false], [true], [false]]}"#,
    )
    .unwrap();
    let code = "def is_prime(n):\n    print('debug output must not matter')\n    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))\n";
    let r = sb.run_program(code, &tests).unwrap();
    assert!(r.passed(), "{r:?}");
    let wrong = "def is_prime(n):\n    return True\n";
    let r = sb.run_program(wrong, &tests).unwrap();
    assert_eq!(r.tests[0].outcome, Outcome::Fail);
    assert_eq!(r.tests[1].outcome, Outcome::Pass);
    assert!((r.pass_fraction() - 1.0 / 3.0).abs() < 1e-12);

    // APPS problem 2404: a LeetCode-style class, a bare expected value and
    // `List` used without an import (the prelude provides it).
    let tests = TestCases::from_json(
        r#"{"fn_name": "findKthPositive", "inputs": [[[2, 3, 4, 7, 11], 5], [[1, 2, 3, 4], 2]], "outputs": [9, 6]}"#,
    )
    .unwrap();
    let class = "class Solution:\n    def findKthPositive(self, arr: List[int], k: int) -> int:\n        s = set(arr)\n        n = 0\n        while k:\n            n += 1\n            if n not in s:\n                k -= 1\n        return n\n";
    assert!(sb.run_program(class, &tests).unwrap().passed());
    let missing = "def other():\n    return 1\n";
    let r = sb.run_program(missing, &tests).unwrap();
    assert_eq!(r.tests[0].outcome, Outcome::RuntimeError);
    assert!(r.tests[0].detail.contains("findKthPositive"), "{r:?}");
    // Tuples come back as lists.
    let tests =
        TestCases::from_json(r#"{"fn_name": "pair", "inputs": [[3]], "outputs": [[[3, 4]]]}"#)
            .unwrap();
    assert!(sb
        .run_program("def pair(n):\n    return (n, n + 1)\n", &tests)
        .unwrap()
        .passed());
}

#[test]
fn asking_for_a_missing_test_is_an_error() {
    let sb = sandbox(1000);
    let tests = stdio_cases(&[("", "")]);
    let err = sb.run_test("pass", &tests, 3).unwrap_err();
    assert_eq!(
        err.to_string(),
        "test 3 does not exist: the problem has 1 tests"
    );
}

/// Issue 13, item 1, in the situation it was found in: the default
/// `python3` on this machine's PATH may be a pyenv shim under /root, which
/// `nobody` cannot run. As root the sandbox must then find an interpreter
/// `nobody` can run (or refuse), and the program must neither run as root
/// nor find the host's secrets — not in its environment, not in any
/// process's /proc/<pid>/environ, not in the test process's own.
#[test]
fn default_python_never_runs_as_root_and_sees_no_secret() {
    std::env::set_var("MARLHF_SANDBOX_SECRET", "s3cr3t-value-42");
    let code = r#"import os
found = []
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            if b's3cr3t-value-42' in open('/proc/%s/environ' % pid, 'rb').read():
                found.append(pid)
        except OSError:
            pass
leaked = found or any('s3cr3t' in v for v in os.environ.values())
try:
    open('/root/marlhf-sandbox-probe', 'w').write('x')
    wrote = 'wrote'
except OSError:
    wrote = 'denied'
print(os.getuid(), os.geteuid(), 'leaked' if leaked else 'clean', wrote)
"#;
    if !is_root() {
        // Without root there is no other user to run as: refused unless the
        // caller accepts running programs as itself.
        let err = Sandbox::new(SandboxConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--sandbox-same-user"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        // Then its own environment at least is scrubbed.
        let sb = sandbox(4000);
        assert!(!sb.drops_privileges());
        let env = "import os\nprint('leaked' if any('s3cr3t' in v for v in os.environ.values()) else 'clean')\n";
        let r = sb
            .run_program(env, &stdio_cases(&[("", "clean\n")]))
            .unwrap();
        assert!(r.passed(), "{r:?}");
        return;
    }
    let sb = match Sandbox::new(SandboxConfig::default()) {
        Ok(sb) => sb,
        Err(e) => {
            // Refusing is allowed when no interpreter works for nobody, in
            // one line that says so.
            let e = e.to_string();
            assert!(e.contains("nobody") && !e.contains('\n'), "{e}");
            return;
        }
    };
    assert!(sb.drops_privileges());
    process::try_python(sb.python(), "pass", Some(NOBODY)).expect("nobody runs the interpreter");
    let tests = stdio_cases(&[("", "65534 65534 clean denied\n")]);
    let r = sb.run_program(code, &tests).unwrap();
    assert!(r.passed(), "{r:?}");
    assert!(!Path::new("/root/marlhf-sandbox-probe").exists());
    if let Some(pyenv) = process::which("python3").filter(|p| p.starts_with("/root")) {
        // The real situation of issue 13: the shim was not used.
        assert!(
            !sb.python().starts_with("/root"),
            "{}",
            sb.python().display()
        );
        let note = sb.note().expect("the substitution is reported");
        assert!(note.contains("nobody"), "{note} ({})", pyenv.display());
    }
}

/// An interpreter nobody cannot reach (here: behind a 0700 directory, like
/// pyenv's under /root) is resolved by name to one it can, and refused in
/// one clear line when given as a path.
#[test]
fn an_interpreter_nobody_cannot_run_is_replaced_or_refused() {
    if !is_root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let private = std::env::temp_dir().join(format!("marlhf-private-{}", random_name()));
    fs::create_dir(&private).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let system = process::which_in("python3", SANDBOX_PATH.as_ref())
        .expect("a python3 on /usr/local/bin:/usr/bin:/bin for this test");
    let real = real_interpreter(&system).unwrap();
    let hidden = private.join("python3");
    fs::copy(&real, &hidden).unwrap();

    let refused = choose_python(&hidden, "".as_ref(), Some(NOBODY))
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("nobody (uid 65534) cannot run")
            && refused.contains(&hidden.display().to_string()),
        "{refused}"
    );
    assert!(
        refused.contains("--python") && !refused.contains('\n'),
        "{refused}"
    );

    let (chosen, note) =
        choose_python(Path::new("python3"), private.as_os_str(), Some(NOBODY)).unwrap();
    assert!(!chosen.starts_with(&private), "{}", chosen.display());
    let note = note.unwrap();
    assert!(
        note.contains(&hidden.display().to_string()) && note.contains("nobody"),
        "{note}"
    );
    fs::remove_dir_all(&private).unwrap();
}

#[test]
fn network_isolation_is_reported() {
    let sb = sandbox(4000);
    assert_eq!(sb.drops_privileges(), is_root());
    if !is_root() && !sb.isolation().namespaces {
        // Without root only bubblewrap's user namespace can make one.
        assert_eq!(sb.network_isolation(), NetworkIsolation::GuardOnly);
        return;
    }
    if sb.network_isolation() == NetworkIsolation::NamespaceAndGuard {
        // /proc/net follows the reader's namespace: only a loopback device.
        let code = "print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))\n";
        let r = sb
            .run_program(code, &stdio_cases(&[("", "['lo']\n")]))
            .unwrap();
        assert!(r.passed(), "{r:?}");
    }
}

/// Issue 21, item 1: a program that finds its test's answer in a file it
/// can read passes every test. Here the answers lie in a world-readable
/// file on the host (as `../shared/data/apps/*.jsonl` does); the program
/// also tries the repository and /root.
#[test]
fn a_program_cannot_read_the_answers_or_the_repository() {
    use std::os::unix::fs::PermissionsExt;
    let sb = sandbox(4000);
    if !namespaces_or_refusal(&sb) {
        return;
    }
    let scratch = Scratch::new("answers");
    let answers = scratch.0.join("answers.json");
    fs::write(&answers, r#"{"1 2\n": "3\n", "5 5\n": "10\n"}"#).unwrap();
    fs::set_permissions(&answers, fs::Permissions::from_mode(0o644)).unwrap();
    let cheat = format!(
        "import json, sys\nprint(json.load(open({:?}))[sys.stdin.read()], end='')\n",
        answers.display().to_string()
    );
    let tests = stdio_cases(&[("1 2\n", "3\n"), ("5 5\n", "10\n")]);
    let r = sb.run_program(&cheat, &tests).unwrap();
    assert!(!r.passed(), "the cheat read the answers: {r:?}");
    assert_eq!(r.tests[0].outcome, Outcome::RuntimeError, "{r:?}");
    assert!(r.tests[0].detail.contains("FileNotFoundError"), "{r:?}");

    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    assert!(repo.exists());
    let probe = format!(
        r#"import os
seen = []
for path in [{answers:?}, {repo:?}, '/root', '/home', '/work', '/run', '/var/run']:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, 'rb').read(1)
        seen.append(path)
    except OSError:
        pass
print(' '.join(sorted(os.listdir('/'))) + ';' + ' '.join(seen))
"#,
        answers = answers.display().to_string(),
        repo = repo.display().to_string()
    );
    let printed = run_and_capture(&sb, &probe);
    let (listing, seen) = printed.trim_end().split_once(';').unwrap();
    assert_eq!(seen, "", "the program could read: {printed}");
    // What a root may hold: the mount points the sandbox makes, the system
    // directories, the interpreter's own prefix.
    let mut allowed: Vec<String> = [
        "bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "proc", "dev", "tmp",
        "var", "sandbox",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for dir in bwrap::interpreter_dirs(sb.python()).unwrap() {
        allowed.extend(
            dir.components()
                .nth(1)
                .map(|c| c.as_os_str().to_string_lossy().into_owned()),
        );
    }
    for entry in listing.split(' ') {
        assert!(
            allowed.iter().any(|a| a == entry),
            "/{entry} is visible: {printed}"
        );
    }
    assert!(listing.contains("sandbox"), "{printed}");
}

/// Issue 21, item 1, with the workplace's real APPS data: a program that
/// looks its input up in the APPS file (every test's expected output is in
/// it) and prints the stored answer.
#[test]
#[ignore = "needs ../shared"]
fn a_program_cannot_look_up_apps_answers() {
    let apps = marlhf_testkit::shared("data/apps/train_subset.jsonl");
    let first = fs::read_to_string(&apps)
        .unwrap_or_else(|e| panic!("{}: {e}", apps.display()))
        .lines()
        .next()
        .unwrap()
        .to_string();
    let problem: Value = serde_json::from_str(&first).unwrap();
    let tests = TestCases::from_json(problem["input_output"].as_str().unwrap()).unwrap();
    let cheat = format!(
        r#"import json, sys
data = sys.stdin.read()
for line in open({apps:?}):
    io = json.loads(json.loads(line)['input_output'])
    for i, o in zip(io['inputs'], io['outputs']):
        if i == data:
            print(o, end='')
            sys.exit(0)
"#,
        apps = apps.display().to_string()
    );
    let sb = sandbox(8000);
    if !namespaces_or_refusal(&sb) {
        return;
    }
    let r = sb.run_program(&cheat, &tests).unwrap();
    assert!(!r.passed(), "the cheat read the APPS answers: {r:?}");
    assert!(r.tests[0].detail.contains("FileNotFoundError"), "{r:?}");
    // The honest solution of the same problem passes.
    assert!(sb.run_program(APPS_1_SOLUTION, &tests).unwrap().passed());
}

/// Issue 21, item 2: a program that calls kill(-1, SIGKILL) kills only its
/// own processes: not a program of another test running at the same time,
/// not a process of its user on the host.
#[test]
fn kill_minus_one_reaches_only_the_programs_own_processes() {
    let sb = sandbox(8000);
    if !namespaces_or_refusal(&sb) {
        // Without namespaces a same-user kill(-1) would kill this test.
        return;
    }
    let mut host = std::process::Command::new("sleep");
    host.arg("30");
    if is_root() {
        use std::os::unix::process::CommandExt;
        host.uid(NOBODY).gid(NOBODY);
    }
    let mut host = host.spawn().unwrap();
    let victim = "import time\ntime.sleep(2.5)\nprint(input())\n";
    let saboteur = "import os, time\nend = time.time() + 3\nwhile time.time() < end:\n    try:\n        os.kill(-1, 9)\n    except OSError:\n        pass\n    time.sleep(0.005)\nprint('done')\n";
    let (v, k) = std::thread::scope(|scope| {
        let v = scope.spawn(|| {
            sb.run_program(victim, &stdio_cases(&[("7\n", "7\n")]))
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(300));
        let k = scope.spawn(|| {
            sb.run_program(saboteur, &stdio_cases(&[("", "done\n")]))
                .unwrap()
        });
        (v.join().unwrap(), k.join().unwrap())
    });
    assert!(k.passed(), "the saboteur ran to its end: {k:?}");
    assert!(v.passed(), "a concurrent program was killed: {v:?}");
    assert!(
        host.try_wait().unwrap().is_none(),
        "a host process of the program's user was killed"
    );
    host.kill().unwrap();
    host.wait().unwrap();
}

/// Issue 21, item 3: the memory limit holds for the program's processes
/// together. Six children of 200 MB each, every one within a per-process
/// limit of 256 MiB, must not be held at once.
#[test]
fn the_memory_limit_is_per_program_not_per_process() {
    let sb = Sandbox::new(SandboxConfig {
        memory_bytes: 256 << 20,
        ..config(10_000)
    })
    .unwrap();
    let Some(version) = sb.isolation().cgroup else {
        let w = sb.weaknesses().join("; ");
        assert!(w.contains("no cgroup") && w.contains("per process"), "{w}");
        eprintln!("no cgroup here: {w}");
        return;
    };
    eprintln!("cgroup {version:?}");
    let hog = r#"import os, time
r, w = os.pipe()
kids = []
for _ in range(6):
    pid = os.fork()
    if pid == 0:
        block = bytearray(200 << 20)
        os.write(w, b'x')
        time.sleep(6)
        os._exit(0)
    kids.append(pid)
got = 0
end = time.time() + 5
while got < 6 and time.time() < end:
    got += len(os.read(r, 6))
held = sum(1 for pid in kids if os.waitpid(pid, os.WNOHANG) == (0, 0))
print(held)
"#;
    let tests = stdio_cases(&[("", "6\n")]);
    let r = sb.run_test(hog, &tests, 0).unwrap();
    assert_ne!(r.outcome, Outcome::Pass, "6 × 200 MB held under 256 MiB");
    let printed = run_and_capture(&sb, hog);
    let held: usize = printed.trim().parse().unwrap_or(0);
    assert!(held <= 1, "{held} children of 200 MB held at once");
    // One child of 200 MB is within the budget.
    let one = "import os\npid = os.fork()\nif pid == 0:\n    b = bytearray(200 << 20)\n    os._exit(0)\n_, status = os.waitpid(pid, 0)\nprint(status)\n";
    assert!(sb
        .run_program(one, &stdio_cases(&[("", "0\n")]))
        .unwrap()
        .passed());
}

/// Issue 21, item 3: files a program writes to /tmp, /var/tmp and /dev/shm
/// are its own (private tmpfs mounts of a bounded size) and are gone when
/// its test ends.
#[test]
fn scratch_files_are_private_bounded_and_gone_after_the_test() {
    let sb = Sandbox::new(SandboxConfig {
        tmp_bytes: 8 << 20,
        ..config(8000)
    })
    .unwrap();
    if !namespaces_or_refusal(&sb) {
        return;
    }
    let tag = format!("marlhf-leftover-{}", random_name());
    let code = format!(
        r#"import os
for d in ['/tmp', '/var/tmp', '/dev/shm']:
    with open(os.path.join(d, {tag:?}), 'w') as f:
        f.write('x')
try:
    with open('/tmp/big', 'wb') as f:
        for _ in range(16):
            f.write(bytearray(1 << 20))
    print('unbounded')
except OSError as e:
    print(e.strerror)
"#
    );
    let r = sb
        .run_program(&code, &stdio_cases(&[("", "No space left on device\n")]))
        .unwrap();
    assert!(r.passed(), "{r:?}");
    for dir in ["/tmp", "/var/tmp", "/dev/shm"] {
        let left = Path::new(dir).join(&tag);
        assert!(!left.exists(), "{} was left behind", left.display());
    }
    // A second test does not see the first one's files either.
    let look = format!("import os\nprint(os.path.exists('/tmp/' + {tag:?}))\n");
    assert!(sb
        .run_program(&look, &stdio_cases(&[("", "False\n")]))
        .unwrap()
        .passed());
}

/// Issue 21, item 4: a world-writable unix socket on the host, and an
/// abstract one, are out of reach even through ctypes (which the Python
/// guard does not cover).
#[test]
fn unix_sockets_are_unreachable() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    let sb = sandbox(4000);
    if !namespaces_or_refusal(&sb) {
        return;
    }
    let scratch = Scratch::new("socket");
    let path = scratch.0.join("s");
    let file = UnixListener::bind(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
    file.set_nonblocking(true).unwrap();
    let name = format!("marlhf-{}", random_name());
    let abstract_ =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    abstract_.set_nonblocking(true).unwrap();
    let code = format!(
        r#"import ctypes
libc = ctypes.CDLL(None, use_errno=True)
class Address(ctypes.Structure):
    _fields_ = [('family', ctypes.c_ushort), ('path', ctypes.c_char * 108)]
def reach(name):
    fd = libc.socket(1, 1, 0)
    address = Address()
    address.family = 1
    ctypes.memmove(ctypes.addressof(address) + 2, name, len(name))
    if libc.connect(fd, ctypes.byref(address), 2 + len(name)) != 0:
        return 'unreachable'
    libc.send(fd, b'hello', 5, 0)
    return 'connected'
print(reach({path:?}.encode()), reach(b'\0' + {name:?}.encode()))
"#,
        path = path.display().to_string()
    );
    let printed = run_and_capture(&sb, &code);
    assert_eq!(printed, "unreachable unreachable\n");
    assert!(file.accept().is_err() && abstract_.accept().is_err());
    // The same program reaches both from outside the sandbox: the probe
    // itself works.
    let out = std::process::Command::new(sb.python())
        .args(["-I", "-S", "-c", &code])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "connected connected\n"
    );
}

/// Where bubblewrap cannot work (here: a path that does not exist), the
/// stage's strict sandbox refuses in one line, and the lenient one runs
/// programs without namespaces and says what that gives away.
#[test]
fn without_bubblewrap_the_sandbox_refuses_or_says_what_is_missing() {
    let missing = SandboxConfig {
        bwrap: PathBuf::from("/nonexistent/bwrap"),
        allow_without_namespaces: false,
        ..config(4000)
    };
    let err = Sandbox::new(missing.clone()).unwrap_err().to_string();
    assert!(
        err.contains("/nonexistent/bwrap") && err.contains("--sandbox-without-namespaces"),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
    let sb = Sandbox::new(SandboxConfig {
        allow_without_namespaces: true,
        ..missing
    })
    .unwrap();
    assert!(!sb.isolation().namespaces);
    let weak = sb.weaknesses().join("\n");
    assert!(
        weak.contains("no namespaces") && weak.contains("one at a time"),
        "{weak}"
    );
    let tests = TestCases::from_json(APPS_1_TESTS).unwrap();
    assert!(sb.run_program(APPS_1_SOLUTION, &tests).unwrap().passed());
}

/// A fork bomb gets the program's process budget, whoever else runs as
/// its user: 200 sleeping children are refused beyond 16.
#[test]
fn processes_are_bounded_per_program() {
    let sb = Sandbox::new(SandboxConfig {
        max_processes: 16,
        ..config(8000)
    })
    .unwrap();
    let bomb = r#"import os, time
kids = 0
for _ in range(200):
    try:
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
        kids += 1
    except OSError:
        break
print(kids)
"#;
    let printed = run_and_capture(&sb, bomb);
    let kids: usize = printed
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{printed:?}"));
    assert!(
        (8..=16).contains(&kids),
        "{kids} children under a budget of 16"
    );
    if !sb.isolation().namespaces && sb.isolation().cgroup.is_none() {
        // A per-user count only: what the line below says.
        let w = sb.weaknesses().join("; ");
        assert!(w.contains("processes are limited per user"), "{w}");
        return;
    }
    // The budget is this program's: another one beside it still forks.
    let one = "import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)\nprint('ok')\n";
    std::thread::scope(|scope| {
        let bombing = scope.spawn(|| run_and_capture(&sb, bomb));
        std::thread::sleep(Duration::from_millis(500));
        let r = sb.run_program(one, &stdio_cases(&[("", "ok\n")])).unwrap();
        assert!(r.passed(), "{r:?}");
        bombing.join().unwrap();
    });
}
