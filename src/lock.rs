//! One writer per output folder: a job takes an exclusive lock on `<folder>/.adfit.lock` for as
//! long as it writes there, and a second process aiming at the same folder is refused with the
//! holder's pid and command. The lock is the operating system's (`flock`), so it ends with the
//! process that held it: a killed run never leaves the folder stuck. The small file stays behind
//! and means nothing once its process is gone; a job that wrote nothing (refused input) removes
//! the folder it created, so a failed command leaves no empty output folder.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock file's name inside an output folder.
pub const LOCK_FILE: &str = ".adfit.lock";

/// Held while a job writes its output folder; released on drop or when the process dies.
#[derive(Debug)]
pub struct OutputLock {
    _file: File,
    pub path: PathBuf,
    /// Whether `acquire` created the folder (then an unused one is removed on drop).
    created: bool,
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let Some(dir) = self.path.parent().filter(|_| self.created) else { return };
        let only_the_lock = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().all(|e| e.file_name() == LOCK_FILE))
            .unwrap_or(false);
        if only_the_lock {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl OutputLock {
    /// Lock `dir` (created if missing) for this process, or say who holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "another adfit process".to_string() } else { holder.to_string() };
                return Err(Error::Busy {
                    path: dir.into(),
                    reason: format!(
                        "another adfit process is writing this folder ({holder}); wait for it to finish or \
                         choose another output folder"
                    ),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let args: Vec<String> = std::env::args().collect();
        let note = format!("pid {}: {}\n", std::process::id(), args.join(" "));
        let _ = file.set_len(0).and_then(|_| file.rewind()).and_then(|_| file.write_all(note.as_bytes()));
        let removed = remove_stale_temporaries(dir);
        if removed > 0 {
            tracing::info!("removed {removed} temporary file(s) left by an interrupted run in {}", dir.display());
        }
        Ok(OutputLock { _file: file, path, created })
    }
}

/// The pid in a temporary name `.NAME.tmp-PID` ([`crate::util::write_atomic`]).
fn temp_pid(name: &str) -> Option<u32> {
    let (_, pid) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    pid.parse().ok()
}

fn alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() || !Path::new("/proc/self").exists()
}

/// Delete, under `dir`, the temporaries of processes that no longer run (a killed run's
/// half-written files never reached their final names; these are what is left of them).
fn remove_stale_temporaries(dir: &Path) -> usize {
    let mut removed = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                stack.push(e.path());
            } else if temp_pid(&name).is_some_and(|pid| !alive(pid)) && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = OutputLock::acquire(dir.path()).unwrap();
        let err = OutputLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another adfit process") && err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        OutputLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_folder_the_lock_created_goes_when_nothing_was_written_there() {
        let dir = tempfile::tempdir().unwrap();
        let (unused, used) = (dir.path().join("refused/out"), dir.path().join("written"));
        drop(OutputLock::acquire(&unused).unwrap());
        assert!(!unused.exists() && dir.path().join("refused").exists());
        let lock = OutputLock::acquire(&used).unwrap();
        std::fs::write(used.join("metrics.csv"), b"x").unwrap();
        drop(lock);
        assert!(used.join("metrics.csv").exists());
        // A folder that existed before is never removed.
        drop(OutputLock::acquire(dir.path()).unwrap());
        assert!(dir.path().exists());
    }

    #[test]
    fn a_dead_processs_temporaries_are_removed_and_a_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("volumes");
        std::fs::create_dir_all(&sub).unwrap();
        // pid 2^22 + 1 is above Linux's pid_max: never alive.
        let dead = sub.join(".a.vol.tmp-4194305");
        let live = sub.join(format!(".b.vol.tmp-{}", std::process::id()));
        for p in [&dead, &live] {
            std::fs::write(p, b"partial").unwrap();
        }
        let keep = sub.join("c.vol");
        std::fs::write(&keep, b"whole").unwrap();
        let _lock = OutputLock::acquire(dir.path()).unwrap();
        assert!(!dead.exists() && live.exists() && keep.exists());
        assert_eq!(temp_pid(".x.csv.tmp-12"), Some(12));
        assert_eq!(temp_pid("x.csv"), None);
    }
}
