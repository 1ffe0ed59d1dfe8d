//! Outputs appear complete or not at all: everything is written under a
//! temporary name in the destination's own directory (so the final rename
//! never crosses a filesystem), synced, then renamed into place. A stage that
//! fails or is killed leaves at most a hidden `.name.tmp-<pid>` behind, never
//! something a later stage or `make` could mistake for a result.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{DataError, Result};

/// The hidden temporary sibling of `path` used while it is being written.
pub fn temp_path(path: &Path) -> PathBuf {
    sibling(path, "tmp")
}

fn sibling(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_string());
    path.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> DataError {
    DataError::file(path, format!("{what}: {e}"))
}

fn ensure_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            fs::create_dir_all(dir).map_err(|e| io_err(dir, "cannot create directory", e))
        }
        _ => Ok(()),
    }
}

fn remove_any(path: &Path) {
    if path.is_dir() {
        let _ = fs::remove_dir_all(path);
    } else {
        let _ = fs::remove_file(path);
    }
}

/// Removes what a killed writer of `path` left: `.name.tmp-<pid>`,
/// `.name.old-<pid>` and `.name.probe-<pid>` of processes that no longer
/// run. Those of a live
/// process (another writer, right now) are left alone.
fn remove_stale(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let name = name.to_string_lossy();
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&format!(".{name}.")) else {
            continue;
        };
        let pid = ["tmp-", "old-", "probe-"]
            .iter()
            .find_map(|kind| rest.strip_prefix(kind))
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            let modified = entry.metadata().and_then(|m| m.modified()).ok();
            if pid != std::process::id() && !may_still_write(pid, modified) {
                remove_any(&entry.path());
            }
        }
    }
}

/// Whether process `pid` may still be writing a temporary it named after
/// itself, last modified at `modified`. Not when `/proc/<pid>` is gone, nor
/// when it is a zombie (state `Z` or `X`: a killed writer whose parent has
/// not reaped it, which in a container whose init does not reap is
/// forever), nor when it started after the temporary was last modified
/// (its pid was reused by another process: a writer creates its temporary
/// after it starts). Linux's `/proc`; elsewhere every pid counts as live.
pub fn may_still_write(pid: u32, modified: Option<SystemTime>) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return !Path::new("/proc/self/stat").exists();
    };
    // The fields after the command name, which is in parentheses and may
    // hold spaces or parentheses itself.
    let fields: Vec<&str> = match stat.rfind(')') {
        Some(end) => stat[end + 1..].split_whitespace().collect(),
        None => return true,
    };
    if matches!(fields.first(), Some(&("Z" | "X" | "x"))) {
        return false;
    }
    match (modified, fields.get(19), boot_time()) {
        (Some(modified), Some(ticks), Some(boot)) => match ticks.parse::<u64>() {
            // Start times are in USER_HZ (100 on every Linux architecture)
            // since boot; the boot time is in whole seconds, and a clock
            // step moves it, hence the slack.
            Ok(ticks) => {
                let started = boot + Duration::from_millis(ticks * 10);
                started <= modified + Duration::from_secs(2)
            }
            Err(_) => true,
        },
        _ => true,
    }
}

/// The wall-clock time the system booted (`btime` of `/proc/stat`).
fn boot_time() -> Option<SystemTime> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let secs = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

fn sync_file(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(path, "cannot sync", e))
}

fn sync_tree(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| io_err(dir, "cannot list", e))?;
    for entry in entries {
        let path = entry.map_err(|e| io_err(dir, "cannot list", e))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            sync_file(&path)?;
        }
    }
    Ok(())
}

/// Makes the renames themselves durable. Not every platform can open a
/// directory for syncing, so this is best effort.
fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(f) = fs::File::open(dir) {
            let _ = f.sync_all();
        }
    }
}

/// A group of files written all-or-nothing: each is staged under a temporary
/// name, and only [`FileSet::commit`] renames them into place. Dropping an
/// uncommitted set (an error, a panic) removes every staged temporary.
#[derive(Default)]
pub struct FileSet {
    staged: Vec<(PathBuf, PathBuf)>,
}

impl FileSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `write` on the temporary path for `path`. On error the temporary
    /// is removed at once and the error returned.
    pub fn stage<T, E, F>(&mut self, path: &Path, write: F) -> std::result::Result<T, E>
    where
        F: FnOnce(&Path) -> std::result::Result<T, E>,
        E: From<DataError>,
    {
        ensure_parent(path)?;
        remove_stale(path);
        let tmp = temp_path(path);
        remove_any(&tmp);
        match write(&tmp) {
            Ok(value) => {
                if !tmp.exists() {
                    return Err(DataError::file(path, "the writer produced no file").into());
                }
                self.staged.push((tmp, path.to_path_buf()));
                Ok(value)
            }
            Err(e) => {
                remove_any(&tmp);
                Err(e)
            }
        }
    }

    /// Like [`FileSet::stage`] for a directory: `write` receives an empty
    /// temporary directory to fill; an existing directory at `path` is
    /// replaced whole on commit.
    pub fn stage_dir<T, E, F>(&mut self, path: &Path, write: F) -> std::result::Result<T, E>
    where
        F: FnOnce(&Path) -> std::result::Result<T, E>,
        E: From<DataError>,
    {
        self.stage(path, |tmp| {
            fs::create_dir_all(tmp).map_err(|e| io_err(tmp, "cannot create directory", e))?;
            write(tmp)
        })
    }

    /// Syncs every staged file and renames them all into place. Every
    /// existing output of the set is moved aside before the first new one
    /// goes in, so a process killed halfway leaves some outputs missing
    /// (which `make` reruns) but never old and new ones side by side; the
    /// moved-aside `.name.old-<pid>` are removed at the end, or by the next
    /// writer once this process is gone.
    pub fn commit(mut self) -> Result<()> {
        for (tmp, _) in &self.staged {
            if tmp.is_dir() {
                sync_tree(tmp)?;
            } else {
                sync_file(tmp)?;
            }
        }
        let staged = std::mem::take(&mut self.staged);
        let give_up = |moved: &[(PathBuf, PathBuf)], rest: &[(PathBuf, PathBuf)]| {
            for (old, path) in moved {
                if !path.exists() {
                    let _ = fs::rename(old, path);
                }
            }
            for (tmp, _) in rest {
                remove_any(tmp);
            }
        };
        let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
        for (tmp, path) in &staged {
            if tmp.is_dir() && path.exists() && !path.is_dir() {
                give_up(&moved, &staged);
                return Err(DataError::file(path, "exists and is not a directory"));
            }
            if path.exists() {
                let old = sibling(path, "old");
                remove_any(&old);
                if let Err(e) = fs::rename(path, &old) {
                    give_up(&moved, &staged);
                    return Err(io_err(path, "cannot move aside", e));
                }
                moved.push((old, path.clone()));
            }
        }
        for (i, (tmp, path)) in staged.iter().enumerate() {
            if let Err(e) = fs::rename(tmp, path) {
                // Back to the old set: the new ones already in place go.
                for (_, placed) in &staged[..i] {
                    remove_any(placed);
                }
                give_up(&moved, &staged[i..]);
                return Err(io_err(path, "cannot rename into place", e));
            }
            sync_parent(path);
        }
        for (old, _) in &moved {
            remove_any(old);
        }
        Ok(())
    }
}

impl Drop for FileSet {
    fn drop(&mut self) {
        for (tmp, _) in &self.staged {
            remove_any(tmp);
        }
    }
}

/// Fails now, before any work, when `path` could not be written later: its
/// directory cannot be created, or a file cannot be created in it.
pub fn check_writable(path: &Path) -> Result<()> {
    ensure_parent(path)?;
    remove_stale(path);
    let probe = sibling(path, "probe");
    fs::write(&probe, b"")
        .map_err(|e| io_err(path, "cannot write here", e))
        .and_then(|()| fs::remove_file(&probe).map_err(|e| io_err(&probe, "cannot remove", e)))
}

/// Writes one file atomically: `write` receives the temporary path to create.
pub fn write_file<T, E, F>(path: &Path, write: F) -> std::result::Result<T, E>
where
    F: FnOnce(&Path) -> std::result::Result<T, E>,
    E: From<DataError>,
{
    let mut set = FileSet::new();
    let value = set.stage(path, write)?;
    set.commit()?;
    Ok(value)
}

/// Writes a whole directory atomically (a checkpoint): `write` receives an
/// empty temporary directory to fill. An existing directory at `path` is
/// replaced only once the new one is complete.
pub fn write_dir<T, E, F>(path: &Path, write: F) -> std::result::Result<T, E>
where
    F: FnOnce(&Path) -> std::result::Result<T, E>,
    E: From<DataError>,
{
    let mut set = FileSet::new();
    let value = set.stage_dir(path, write)?;
    set.commit()?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use marlhf_testkit::TempDir;

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn file_appears_only_when_complete() {
        let dir = TempDir::new("atomic-file");
        let path = dir.path().join("sub/out.txt");
        write_file(&path, |tmp| -> Result<()> {
            assert!(!path.exists(), "final name must not exist while writing");
            assert_eq!(tmp.parent(), path.parent());
            fs::write(tmp, b"hello").map_err(|e| io_err(tmp, "write", e))
        })
        .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert_eq!(listing(&dir.path().join("sub")), vec!["out.txt"]);
    }

    #[test]
    fn failed_write_leaves_nothing_and_keeps_the_old_file() {
        let dir = TempDir::new("atomic-fail");
        let path = dir.path().join("out.txt");
        fs::write(&path, b"old").unwrap();
        let r: anyhow::Result<()> = write_file(&path, |tmp| {
            fs::write(tmp, b"partial")?;
            anyhow::bail!("disk on fire")
        });
        assert_eq!(r.unwrap_err().to_string(), "disk on fire");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(listing(dir.path()), vec!["out.txt"]);
    }

    #[test]
    fn file_set_is_all_or_nothing() {
        let dir = TempDir::new("atomic-set");
        let a = dir.path().join("a.txt");
        let b = dir.path().join("b.txt");
        {
            let mut set = FileSet::new();
            set.stage(&a, |tmp| {
                fs::write(tmp, b"a").map_err(|e| io_err(tmp, "w", e))
            })
            .unwrap();
            let r = set.stage(&b, |_tmp| -> Result<()> { Err(DataError::invalid("nope")) });
            assert!(r.is_err());
            // dropped without commit
        }
        assert!(listing(dir.path()).is_empty());

        let mut set = FileSet::new();
        set.stage(&a, |tmp| {
            fs::write(tmp, b"a").map_err(|e| io_err(tmp, "w", e))
        })
        .unwrap();
        set.stage(&b, |tmp| {
            fs::write(tmp, b"b").map_err(|e| io_err(tmp, "w", e))
        })
        .unwrap();
        assert!(!a.exists() && !b.exists());
        set.commit().unwrap();
        assert_eq!(listing(dir.path()), vec!["a.txt", "b.txt"]);
    }

    /// Issue 13, item 9: a writer killed mid-write leaves its temporary;
    /// the next write of the same file removes it (not a live writer's).
    #[test]
    fn a_killed_writers_temporaries_are_removed_by_the_next_write() {
        let dir = TempDir::new("atomic-stale");
        let path = dir.path().join("actor");
        // pid_max is at most 2^22: this process cannot exist.
        let dead = dir.path().join(".actor.tmp-999999999");
        fs::create_dir_all(dead.join("sub")).unwrap();
        fs::write(dead.join("sub/model.safetensors"), b"17 MB").unwrap();
        let old = dir.path().join(".actor.old-999999998");
        fs::write(&old, b"x").unwrap();
        // pid 1 (init) runs: its temporary may be a live writer's.
        let live = dir.path().join(".actor.tmp-1");
        fs::write(&live, b"x").unwrap();
        let other = dir.path().join(".critic.tmp-999999999");
        fs::write(&other, b"x").unwrap();
        write_dir(&path, |tmp| -> Result<()> {
            fs::write(tmp.join("model.safetensors"), b"new").map_err(|e| io_err(tmp, "w", e))
        })
        .unwrap();
        assert_eq!(
            listing(dir.path()),
            vec![".actor.tmp-1", ".critic.tmp-999999999", "actor"]
        );
    }

    /// Issue 21, item 7: a writer killed while its parent does not reap it
    /// stays a zombie, and `/proc/<pid>` exists for it; its temporary is
    /// stale all the same. So is one whose pid now belongs to a process
    /// that started after the temporary was written.
    #[test]
    fn a_zombie_or_reused_pids_temporaries_are_removed() {
        let dir = TempDir::new("atomic-zombie");
        let path = dir.path().join("actor");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped: once it exits it is a zombie.
        let state = || {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            stat[stat.rfind(')').unwrap() + 2..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while state() != "Z" {
            assert!(std::time::Instant::now() < deadline, "no zombie");
            std::thread::sleep(Duration::from_millis(10));
        }
        let zombie = dir.path().join(format!(".actor.tmp-{pid}"));
        fs::create_dir_all(zombie.join("sub")).unwrap();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        assert!(!may_still_write(pid, Some(SystemTime::now())));
        // pid 1 runs, but started long after 1971: not the writer of a
        // temporary last modified then.
        let reused = dir.path().join(".actor.old-1");
        fs::write(&reused, b"x").unwrap();
        let long_ago = UNIX_EPOCH + Duration::from_secs(365 * 86400);
        fs::File::options()
            .write(true)
            .open(&reused)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        // A live writer's fresh temporary stays.
        let live = dir.path().join(".actor.tmp-1");
        fs::write(&live, b"x").unwrap();
        assert!(may_still_write(1, Some(SystemTime::now())));
        write_dir(&path, |tmp| -> Result<()> {
            fs::write(tmp.join("model.safetensors"), b"new").map_err(|e| io_err(tmp, "w", e))
        })
        .unwrap();
        assert_eq!(listing(dir.path()), vec![".actor.tmp-1", "actor"]);
        child.wait().unwrap();
    }

    #[test]
    fn directory_is_replaced_whole() {
        let dir = TempDir::new("atomic-dir");
        let ckpt = dir.path().join("ckpt");
        write_dir(&ckpt, |tmp| -> Result<()> {
            fs::write(tmp.join("one"), b"1").unwrap();
            fs::write(tmp.join("stale"), b"x").unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(listing(&ckpt), vec!["one", "stale"]);

        write_dir(&ckpt, |tmp| -> Result<()> {
            assert!(listing(tmp).is_empty(), "a fresh directory every time");
            fs::write(tmp.join("two"), b"2").unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(listing(&ckpt), vec!["two"]);
        assert_eq!(listing(dir.path()), vec!["ckpt"]);

        let r = write_dir(&ckpt, |tmp| -> Result<()> {
            fs::write(tmp.join("three"), b"3").unwrap();
            Err(DataError::invalid("interrupted"))
        });
        assert!(r.is_err());
        assert_eq!(listing(&ckpt), vec!["two"]);
        assert_eq!(listing(dir.path()), vec!["ckpt"]);
    }
}
