//! The exclusive lock on a run's output directory.
//!
//! Two runs writing one output directory at once would append the same records twice and mark
//! units done over each other's files. [`RunLock::acquire`] takes an OS advisory lock (`flock`)
//! on `<out>/.toxdrift.lock` and writes its pid there; a second run is refused with
//! [`Error::Locked`] naming that pid (exit code 2), or waits for the lock with `wait`. The OS
//! drops the lock when its process dies, however it dies, so a lock left by a killed run is
//! stale by construction: the next run finds the file unlocked with the dead run's pid in it,
//! says it takes it over, and goes on.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the output directory.
pub const LOCK_FILE: &str = ".toxdrift.lock";

/// A held lock on an output directory; released (and its pid cleared) when dropped.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
}

impl RunLock {
    /// Locks `dir` (created if needed) for this process. Held by another live process: with
    /// `wait`, blocks until it is released; without, [`Error::Locked`] naming the holder's pid.
    pub fn acquire(dir: &Path, wait: bool) -> Result<RunLock> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = read_pid(&mut file, &path)?;
                if !wait {
                    return Err(Error::Locked {
                        dir: dir.to_path_buf(),
                        pid: holder,
                    });
                }
                eprintln!(
                    "waiting for the toxdrift run with pid {holder} to release {}",
                    dir.display()
                );
                file.lock().map_err(|e| Error::io(&path, e))?;
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let previous = read_pid(&mut file, &path)?;
        if !previous.is_empty() {
            tracing::info!(
                "{}: taking over the lock left by an interrupted run (pid {previous})",
                dir.display()
            );
        }
        let me = std::process::id().to_string();
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| file.write_all(me.as_bytes()))
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io(&path, e))?;
        Ok(RunLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // The file stays (deleting it would let a waiting run and a new one lock two different
        // files); an empty file means "released cleanly".
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

fn read_pid(file: &mut File, path: &Path) -> Result<String> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut s))
        .map_err(|e| Error::io(path, e))?;
    let s = s.trim();
    Ok(if s.is_empty() {
        String::new()
    } else {
        s.chars().take(32).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_then_gets_it_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path(), false).unwrap();
        let e = RunLock::acquire(dir.path(), false).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        assert_eq!(e.exit_code(), 2);
        drop(first);
        let again = RunLock::acquire(dir.path(), false).unwrap();
        assert_eq!(
            std::fs::read_to_string(again.path()).unwrap(),
            std::process::id().to_string()
        );
    }

    #[test]
    fn a_stale_lock_file_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // What a killed run leaves: its pid in an unlocked file.
        std::fs::write(dir.path().join(LOCK_FILE), "999999999").unwrap();
        let lock = RunLock::acquire(dir.path(), false).unwrap();
        assert_eq!(
            std::fs::read_to_string(lock.path()).unwrap(),
            std::process::id().to_string()
        );
    }
}
