//! These run real python3 processes.

use super::*;
use std::net::TcpListener;
use std::time::Instant;

fn sandbox(timeout_ms: u64) -> Sandbox {
    Sandbox::new(SandboxConfig {
        timeout: Duration::from_millis(timeout_ms),
        ..SandboxConfig::default()
    })
    .expect("python3 is needed for the sandbox tests")
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
        ..SandboxConfig::default()
    })
    .unwrap();
    let tests = stdio_cases(&[("1\n", "2\n"), ("2\n", "2\n")]);
    let r = sb.run_program("print(input())\n", &tests).unwrap();
    assert_eq!(r.tests.len(), 1);
    assert_eq!(r.total, 2);
    assert!(!r.passed());
    assert_eq!(r.pass_fraction(), 0.0);
}

/// Live (non-zombie) processes whose process group is `pgid`.
fn live_in_group(pgid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name, which is in parentheses.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (state, group) = (fields[0], fields[2].parse::<i32>().unwrap());
        if group == pgid && state != "Z" {
            found.push(pid);
        }
    }
    found
}

#[test]
fn infinite_loop_is_killed_with_its_whole_group() {
    let sb = sandbox(1000);
    // The parent and a forked child both spin; the child would outlive a
    // kill of the parent alone.
    let code = "import os, sys\nsys.stdout.write(str(os.getpgid(0)) + '\\n')\nsys.stdout.flush()\nos.fork()\nwhile True:\n    pass\n";
    let tests = stdio_cases(&[("", "never")]);
    let dir = TempDir::new().unwrap();
    fs::write(dir.path().join("solution.py"), code).unwrap();
    fs::write(dir.path().join("runner.py"), RUNNER).unwrap();
    let started = Instant::now();
    let r = sb.run_test(code, &tests, 0).unwrap();
    let took = started.elapsed();
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert!(took < Duration::from_secs(4), "took {took:?}");

    // Run it once more through the process layer to learn the group id.
    let python = sb.python().to_path_buf();
    let done = process::run(
        &python,
        &[
            "-I".into(),
            "-S".into(),
            "runner.py".into(),
            "stdio".into(),
            "n".into(),
        ],
        dir.path(),
        b"",
        &process::Limits {
            wall: Duration::from_millis(800),
            cpu_seconds: 5,
            address_space_bytes: 1 << 30,
            file_size_bytes: 1 << 20,
            processes: 64,
            output_bytes: 1 << 20,
        },
    )
    .unwrap();
    assert!(done.timed_out);
    let printed: i32 = String::from_utf8_lossy(&done.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(printed, done.pgid);
    // SIGKILL is asynchronous: give the kernel a moment to finish the kill.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !live_in_group(done.pgid).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(live_in_group(done.pgid), Vec::<i32>::new());
}

#[test]
fn cpu_limit_stops_a_busy_loop_as_a_timeout() {
    // Wall clock far away, CPU limit 1 s: SIGXCPU ends it.
    let sb = Sandbox::new(SandboxConfig {
        timeout: Duration::from_secs(20),
        cpu_seconds: Some(1),
        ..SandboxConfig::default()
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
        ..SandboxConfig::default()
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
fn root_runs_programs_as_nobody_when_it_can() {
    // /usr/bin/python3 is reachable by `nobody`; a pyenv one under /root
    // usually is not.
    let system = Path::new("/usr/bin/python3");
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !system.exists() {
        return;
    }
    let sb = Sandbox::new(SandboxConfig {
        python: system.to_path_buf(),
        ..SandboxConfig::default()
    })
    .unwrap();
    if sb.network_isolation() == NetworkIsolation::GuardOnly {
        return; // no working unshare here
    }
    assert!(sb.drops_privileges());
    // It can use its working directory but not touch root's files.
    let code = "import os\nopen('scratch.txt', 'w').write('x')\ntry:\n    open('/root/marlhf-sandbox-probe', 'w')\n    print('wrote')\nexcept PermissionError:\n    print(os.getuid())\n";
    let tests = stdio_cases(&[("", "65534\n")]);
    let r = sb.run_program(code, &tests).unwrap();
    assert!(r.passed(), "{r:?}");
    assert!(!Path::new("/root/marlhf-sandbox-probe").exists());
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

#[test]
fn network_isolation_is_reported() {
    let sb = sandbox(1000);
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert_eq!(sb.network_isolation(), NetworkIsolation::GuardOnly);
        assert!(!sb.drops_privileges());
    }
    if sb.drops_privileges() {
        let tests = stdio_cases(&[("", "65534\n")]);
        let r = sb
            .run_program("import os\nprint(os.getuid())\n", &tests)
            .unwrap();
        assert!(r.passed(), "{r:?}");
    }
}
