//! One memory and process budget per program: a control group per test,
//! created under the caller's own cgroup, that the program's process joins
//! before it runs anything of the program's (runner.py). Everything it
//! starts stays in the group, so `memory.max` bounds the program's
//! processes together (tmpfs pages included: they are charged to the group
//! that wrote them) and `pids.max` bounds how many it may run at once.
//!
//! Either hierarchy works: cgroup v2 (`memory.max`, `pids.max`,
//! `cgroup.kill`) where the caller's cgroup can enable the memory and pids
//! controllers for children, which v2 allows only where the cgroup itself
//! holds no process (the root, or a delegated subtree); else the v1
//! `memory` and `pids` hierarchies (`memory.limit_in_bytes`, `pids.max`),
//! which nest under a cgroup that holds processes. Where neither can be
//! written (no root, no delegation, a read-only /sys/fs/cgroup), there is no
//! group and [`Cgroups::discover`] says why; the sandbox then falls back to
//! per-process rlimits and says so.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which hierarchy a controller lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// One controller's directory for this sandbox: `<own cgroup>/<name>`.
#[derive(Debug, Clone)]
struct Controller {
    version: Version,
    base: PathBuf,
}

/// The sandbox's cgroup directories (removed on drop).
#[derive(Debug)]
pub struct Cgroups {
    memory: Controller,
    pids: Controller,
}

/// The limits of one test's group.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub memory_bytes: u64,
    pub processes: u64,
}

/// Prefix of the sandbox's directories in every hierarchy; the pid of the
/// process that made them follows, so stale ones can be found.
const PREFIX: &str = "marlhf-sandbox-";

impl Cgroups {
    /// Finds writable memory and pids controllers and creates this
    /// sandbox's directory in each. `Err` says why there are none.
    pub fn discover() -> Result<Self, String> {
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let mounts = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let memberships = parse_proc_cgroup(&own);
        let mounts = parse_mountinfo(&mounts);
        let name = format!(
            "{PREFIX}{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let mut why = Vec::new();

        // cgroup v2, where it can hand memory and pids to a child.
        match v2_dir(&memberships, &mounts) {
            Some(own_dir) => match enable_v2(&own_dir) {
                Ok(()) => {
                    remove_stale(&own_dir);
                    let base = own_dir.join(&name);
                    match fs::create_dir(&base) {
                        Ok(()) => {
                            let c = Controller {
                                version: Version::V2,
                                base,
                            };
                            return Ok(Self {
                                memory: c.clone(),
                                pids: c,
                            });
                        }
                        Err(e) => {
                            why.push(format!("cgroup v2: cannot create {}: {e}", base.display()))
                        }
                    }
                }
                Err(e) => why.push(format!("cgroup v2: {e}")),
            },
            None => why.push("cgroup v2: no memory and pids controllers".to_string()),
        }
        // cgroup v1: one hierarchy per controller.
        let v1 = |controller: &str| -> Result<Controller, String> {
            let own_dir = v1_dir(controller, &memberships, &mounts)
                .ok_or_else(|| format!("cgroup v1: no {controller} hierarchy"))?;
            remove_stale(&own_dir);
            let base = own_dir.join(&name);
            fs::create_dir(&base)
                .map_err(|e| format!("cgroup v1: cannot create {}: {e}", base.display()))?;
            Ok(Controller {
                version: Version::V1,
                base,
            })
        };
        match (v1("memory"), v1("pids")) {
            (Ok(memory), Ok(pids)) => Ok(Self { memory, pids }),
            (memory, pids) => {
                for made in [&memory, &pids].into_iter().flatten() {
                    let _ = fs::remove_dir(&made.base);
                }
                why.extend(memory.err());
                why.extend(pids.err());
                Err(why.join("; "))
            }
        }
    }

    pub fn version(&self) -> Version {
        self.memory.version
    }

    /// A fresh group for one test with `budget`, in every hierarchy.
    pub fn test_group(&self, budget: Budget) -> std::io::Result<TestGroup> {
        let name = format!("t{:016x}", rand::random::<u64>());
        let mut group = TestGroup {
            memory: self.memory.base.join(&name),
            pids: self.pids.base.join(&name),
            version: self.memory.version,
        };
        fs::create_dir(&group.memory)?;
        if group.pids != group.memory {
            if let Err(e) = fs::create_dir(&group.pids) {
                let _ = fs::remove_dir(&group.memory);
                return Err(e);
            }
        }
        let limits = || -> std::io::Result<()> {
            let bytes = budget.memory_bytes.to_string();
            match self.memory.version {
                Version::V2 => {
                    fs::write(group.memory.join("memory.max"), &bytes)?;
                    // No swap to spill into (absent without swap accounting).
                    let _ = fs::write(group.memory.join("memory.swap.max"), "0");
                }
                Version::V1 => {
                    fs::write(group.memory.join("memory.limit_in_bytes"), &bytes)?;
                    let _ = fs::write(group.memory.join("memory.memsw.limit_in_bytes"), &bytes);
                }
            }
            fs::write(group.pids.join("pids.max"), budget.processes.to_string())
        };
        if let Err(e) = limits() {
            group.remove();
            // Drop would try again; nothing is left to remove.
            group.memory = PathBuf::new();
            group.pids = PathBuf::new();
            return Err(e);
        }
        Ok(group)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.memory.base);
        if self.pids.base != self.memory.base {
            let _ = fs::remove_dir(&self.pids.base);
        }
    }
}

/// One test's group: joined by the program's process, emptied and removed
/// on drop.
#[derive(Debug)]
pub struct TestGroup {
    memory: PathBuf,
    pids: PathBuf,
    version: Version,
}

impl TestGroup {
    /// The `cgroup.procs` files the program's process writes its pid to.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.memory.join("cgroup.procs")];
        if self.pids != self.memory {
            files.push(self.pids.join("cgroup.procs"));
        }
        files
    }

    /// Whether the kernel killed a process of the group for exceeding the
    /// memory budget.
    pub fn oom_killed(&self) -> bool {
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        fs::read_to_string(self.memory.join(file))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .is_some_and(|n| n > 0)
    }

    /// Kills whatever is left in the group and removes it.
    fn remove(&self) {
        for dir in [&self.memory, &self.pids] {
            if dir.as_os_str().is_empty() {
                continue;
            }
            empty_and_remove(dir, self.version);
        }
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Kills every process in `dir` and removes it; a process being torn down
/// keeps the group busy for a moment, hence the retries.
fn empty_and_remove(dir: &Path, version: Version) {
    if !dir.exists() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if version == Version::V2 {
            let _ = fs::write(dir.join("cgroup.kill"), "1");
        }
        let pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        for pid in &pids {
            // SAFETY: plain system call; the pid is in our own sandbox group.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        if pids.is_empty() && fs::remove_dir(dir).is_ok() {
            return;
        }
        if Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Removes the sandbox directories of processes that are gone (a killed
/// evaluation cannot remove its own).
fn remove_stale(own_dir: &Path) {
    let Ok(entries) = fs::read_dir(own_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let modified = entry.metadata().and_then(|m| m.modified()).ok();
        if marlhf_data::atomic::may_still_write(pid, modified) {
            continue;
        }
        let version = if entry.path().join("cgroup.kill").exists()
            || entry.path().join("cgroup.controllers").exists()
        {
            Version::V2
        } else {
            Version::V1
        };
        if let Ok(tests) = fs::read_dir(entry.path()) {
            for test in tests.flatten() {
                if test.path().is_dir() {
                    empty_and_remove(&test.path(), version);
                }
            }
        }
        let _ = fs::remove_dir(entry.path());
    }
}

/// `hierarchy-id:controllers:path` lines of /proc/self/cgroup, as
/// (controllers, path); v2's line has empty controllers.
fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            let controllers = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some((controllers, path.to_string()))
        })
        .collect()
}

/// A cgroup filesystem mount: where it is, the cgroup path it shows (a
/// container may see a subtree), its type and super options.
#[derive(Debug, Clone, PartialEq)]
struct Mount {
    root: String,
    point: PathBuf,
    fstype: String,
    options: Vec<String>,
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let fstype = *right.first()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            Some(Mount {
                root: unescape(left.get(3)?),
                point: PathBuf::from(unescape(left.get(4)?)),
                fstype: fstype.to_string(),
                options: right
                    .get(2)
                    .map(|o| o.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of `path` (a cgroup path of /proc/self/cgroup) under a
/// mount that shows cgroup path `mount.root` at `mount.point`.
fn under(mount: &Mount, path: &str) -> Option<PathBuf> {
    let rel = if mount.root == "/" {
        path
    } else {
        path.strip_prefix(mount.root.as_str())?
    };
    let rel = rel.trim_start_matches('/');
    Some(if rel.is_empty() {
        mount.point.clone()
    } else {
        mount.point.join(rel)
    })
}

fn v1_dir(
    controller: &str,
    memberships: &[(Vec<String>, String)],
    mounts: &[Mount],
) -> Option<PathBuf> {
    let (_, path) = memberships
        .iter()
        .find(|(cs, _)| cs.iter().any(|c| c == controller))?;
    let mount = mounts
        .iter()
        .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == controller))?;
    under(mount, path)
}

/// The caller's v2 cgroup directory, when memory and pids are available
/// in it.
fn v2_dir(memberships: &[(Vec<String>, String)], mounts: &[Mount]) -> Option<PathBuf> {
    let (_, path) = memberships.iter().find(|(cs, _)| cs.is_empty())?;
    let mount = mounts.iter().find(|m| m.fstype == "cgroup2")?;
    let dir = under(mount, path)?;
    let available = fs::read_to_string(dir.join("cgroup.controllers")).ok()?;
    let has = |c: &str| available.split_whitespace().any(|a| a == c);
    (has("memory") && has("pids")).then_some(dir)
}

/// Enables memory and pids for the children of `dir`. v2 refuses that
/// (EBUSY) in a cgroup that holds processes other than the root.
fn enable_v2(dir: &Path) -> Result<(), String> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&control).unwrap_or_default();
    let on = |c: &str| enabled.split_whitespace().any(|a| a == c);
    if on("memory") && on("pids") {
        return Ok(());
    }
    fs::write(&control, "+memory +pids").map_err(|e| {
        format!(
            "cannot enable the memory and pids controllers in {} ({e}; a cgroup that holds processes cannot, unless it is the root)",
            control.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's layout: a v1/v2 hybrid, memory and pids in v1, the
    /// process in a nested memory cgroup.
    #[test]
    fn finds_v1_controllers_and_the_v2_hierarchy() {
        let cgroup = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/c87e\n0::/\n";
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 30 0:33 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
39 30 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
40 25 0:36 / /mnt/with\\040space rw - ext4 /dev/sda rw
";
        let memberships = parse_proc_cgroup(cgroup);
        let mounts = parse_mountinfo(mountinfo);
        assert_eq!(mounts.len(), 3);
        assert_eq!(
            v1_dir("memory", &memberships, &mounts).unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/c87e")
        );
        assert_eq!(
            v1_dir("pids", &memberships, &mounts).unwrap(),
            Path::new("/sys/fs/cgroup/pids")
        );
        assert_eq!(v1_dir("cpu", &memberships, &mounts), None);
        // A container that sees a subtree of the hierarchy at its mount.
        let sub = Mount {
            root: "/docker/abc".into(),
            point: "/sys/fs/cgroup/memory".into(),
            fstype: "cgroup".into(),
            options: vec!["rw".into(), "memory".into()],
        };
        assert_eq!(
            under(&sub, "/docker/abc/x").unwrap(),
            Path::new("/sys/fs/cgroup/memory/x")
        );
        assert_eq!(under(&sub, "/other"), None);
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
    }
}
