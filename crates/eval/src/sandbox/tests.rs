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
        ..SandboxConfig::default()
    }
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

/// Issue 13, item 3: a timed-out program's processes all die with it: a
/// forked child, and a grandchild that called setsid() and would outlive a
/// kill of the process group.
#[test]
fn timeout_kills_every_process_the_program_started() {
    let sb = sandbox(800);
    let scratch = Scratch::new("setsid");
    let marker = scratch.0.join("outlived");
    let code = format!(
        r#"import os, sys, time
pids = [os.getpid()]
child = os.fork()
if child == 0:
    grandchild = os.fork()
    if grandchild == 0:
        os.setsid()
        time.sleep(3.0)
        open({marker:?}, 'w').write('x')
        os._exit(0)
    while True:
        pass
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    os.write(w, str(os.getpid()).encode())
    while True:
        time.sleep(0.01)
pids += [child, int(os.read(r, 32))]
sys.stdout.write(' '.join(map(str, pids)) + '\n')
sys.stdout.flush()
while True:
    pass
"#,
        marker = marker.display().to_string()
    );
    let tests = stdio_cases(&[("", "never")]);
    let started = Instant::now();
    let r = sb.run_test(&code, &tests, 0).unwrap();
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );

    // The pids are those of the host's pid namespace: ask the program again
    // through a sandbox whose stdout we can read.
    let printed = run_and_capture(&sb, &code);
    let pids: Vec<i32> = printed
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 3, "{printed:?}");
    for pid in &pids {
        assert!(!alive(*pid), "process {pid} outlived its test");
    }
    // The setsid() grandchild would have written the marker after 3 s: far
    // past the 0.8 s limit, so a loaded machine's slow kill is no failure.
    std::thread::sleep(Duration::from_millis(3300));
    assert!(!marker.exists(), "a setsid() descendant outlived its test");
}

/// Runs `code` as a stdio program through the sandbox's process layer and
/// returns what it printed (the test API only returns outcomes).
fn run_and_capture(sb: &Sandbox, code: &str) -> String {
    let dir = sb.base.test_dir(sb.user).unwrap();
    let solution = dir.path().join("solution.py");
    fs::write(&solution, code).unwrap();
    if let Some(uid) = sb.user {
        std::os::unix::fs::chown(&solution, Some(uid), Some(uid)).unwrap();
    }
    let args: Vec<String> = vec![
        "stdio".into(),
        sb.config.timeout.as_millis().to_string(),
        sb.user.map_or("-".into(), |u| u.to_string()),
        "65536".into(),
    ];
    let done = process::run(
        &sb.python,
        RUNNER,
        &args,
        dir.path(),
        b"",
        &process::Limits {
            wall: sb.config.timeout,
            cpu_seconds: 5,
            address_space_bytes: 1 << 30,
            file_size_bytes: 1 << 20,
            processes: 64,
            output_bytes: 1 << 20,
        },
        process::Isolation {
            net_namespace: sb.net_namespace,
        },
    )
    .unwrap();
    assert!(!done.backstop);
    String::from_utf8_lossy(&done.stdout).into_owned()
}

/// A program that exits at once leaves no background process behind either.
#[test]
fn a_finished_program_leaves_no_process_behind() {
    let sb = sandbox(4000);
    let scratch = Scratch::new("daemon");
    let marker = scratch.0.join("outlived");
    let code = format!(
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(0.8)\n        open({:?}, 'w').write('x')\n    os._exit(0)\nprint('done')\n",
        marker.display().to_string()
    );
    let tests = stdio_cases(&[("", "done\n")]);
    let r = sb.run_program(&code, &tests).unwrap();
    assert!(r.passed(), "{r:?}");
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        !marker.exists(),
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
    if !is_root() {
        assert_eq!(sb.network_isolation(), NetworkIsolation::GuardOnly);
        assert!(!sb.drops_privileges());
        return;
    }
    assert!(sb.drops_privileges());
    if sb.network_isolation() == NetworkIsolation::NamespaceAndGuard {
        // /proc/net follows the reader's namespace: only a loopback device.
        let code = "print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))\n";
        let r = sb
            .run_program(code, &stdio_cases(&[("", "['lo']\n")]))
            .unwrap();
        assert!(r.passed(), "{r:?}");
    }
}
