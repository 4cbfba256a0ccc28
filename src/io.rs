//! Crash-safe output files: resumable JSONL appends and atomic whole-file writes.
//!
//! Every long stage of toxdrift writes one JSON object per line, flushed and fsynced per batch, so
//! a run killed at any point resumes where it stopped: [`ResumableJsonl::open`] drops a torn last
//! line (a record that was being written when the process died), remembers the ids already present,
//! and the caller skips those. Whole files (reports, comparisons) go through [`write_atomic`]:
//! a temporary file beside the target, fsynced, then renamed over it.

use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// An append-only JSONL output that knows which record ids it already holds.
#[derive(Debug)]
pub struct ResumableJsonl {
    path: PathBuf,
    file: File,
    done: HashSet<String>,
}

impl ResumableJsonl {
    /// Opens (or creates) `path` for appending. Existing complete lines are kept and their
    /// `id_field` values remembered; a torn last line (no trailing newline, or not valid JSON) is
    /// cut off. A complete line that is not a JSON object with a string `id_field` is an error:
    /// the file is not one of ours, and appending to it would mix formats.
    pub fn open(path: impl AsRef<Path>, id_field: &str) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut done = HashSet::new();
        let mut keep: u64 = 0;
        {
            let mut reader = BufReader::new(&file);
            let mut line = Vec::new();
            let mut lineno = 0usize;
            loop {
                line.clear();
                let n = reader
                    .read_until(b'\n', &mut line)
                    .map_err(|e| Error::io(&path, e))?;
                if n == 0 {
                    break;
                }
                lineno += 1;
                let complete = line.last() == Some(&b'\n');
                let parsed: Option<serde_json::Value> = serde_json::from_slice(&line).ok();
                match (complete, parsed) {
                    (true, Some(value)) => {
                        let id = value.get(id_field).and_then(|v| v.as_str()).ok_or_else(|| {
                            Error::BadInput(format!(
                                "{}:{lineno}: existing record has no string field `{id_field}`; \
                                 refusing to append to a file of another format",
                                path.display()
                            ))
                        })?;
                        done.insert(id.to_string());
                        keep += n as u64;
                    }
                    // A torn write can only be the last line: anything after it is an error.
                    (_, _) => {
                        let mut rest = Vec::new();
                        std::io::Read::read_to_end(&mut reader, &mut rest)
                            .map_err(|e| Error::io(&path, e))?;
                        if !rest.is_empty() {
                            return Err(Error::BadInput(format!(
                                "{}:{lineno}: not a valid JSON record, and not the last line \
                                 (so not a torn write): fix or remove the file",
                                path.display()
                            )));
                        }
                        break;
                    }
                }
            }
        }
        if file.metadata().map_err(|e| Error::io(&path, e))?.len() != keep {
            file.set_len(keep).map_err(|e| Error::io(&path, e))?;
            file.sync_all().map_err(|e| Error::io(&path, e))?;
        }
        file.seek(SeekFrom::End(0))
            .map_err(|e| Error::io(&path, e))?;
        Ok(Self { path, file, done })
    }

    /// Whether a record with this id is already in the file.
    pub fn contains(&self, id: &str) -> bool {
        self.done.contains(id)
    }

    /// How many records the file holds.
    pub fn len(&self) -> usize {
        self.done.len()
    }

    /// Whether the file holds no record.
    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    /// The output path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a batch of `(id, record)` pairs as whole lines, then fsyncs, so a kill leaves
    /// either the whole line or a torn last line that [`ResumableJsonl::open`] removes.
    pub fn append_batch<T: Serialize>(&mut self, records: &[(String, T)]) -> Result<()> {
        let mut buf = Vec::new();
        for (_, record) in records {
            serde_json::to_writer(&mut buf, record)
                .map_err(|e| Error::Internal(format!("cannot serialise a record: {e}")))?;
            buf.push(b'\n');
        }
        self.file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))?;
        self.done.extend(records.iter().map(|(id, _)| id.clone()));
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsynced, then
/// renamed over `path`. Readers see the old file or the new one, never a half-written one.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::BadInput(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Rec<'a> {
        id: &'a str,
        x: u32,
    }

    #[test]
    fn resumes_and_drops_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut w = ResumableJsonl::open(&path, "id").unwrap();
        w.append_batch(&[
            ("a".to_string(), Rec { id: "a", x: 1 }),
            ("b".to_string(), Rec { id: "b", x: 2 }),
        ])
        .unwrap();
        drop(w);
        // Simulate a kill in the middle of writing the third record.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"id": "c", "x"#).unwrap();
        drop(f);
        let mut w = ResumableJsonl::open(&path, "id").unwrap();
        assert_eq!(w.len(), 2);
        assert!(w.contains("a") && w.contains("b") && !w.contains("c"));
        w.append_batch(&[("c".to_string(), Rec { id: "c", x: 3 })])
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"id\":\"a\",\"x\":1}\n{\"id\":\"b\",\"x\":2}\n{\"id\":\"c\",\"x\":3}\n"
        );
    }

    #[test]
    fn refuses_a_corrupt_middle_line_and_a_foreign_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        std::fs::write(&path, "{\"id\":\"a\"}\nnot json\n{\"id\":\"b\"}\n").unwrap();
        let err = ResumableJsonl::open(&path, "id").unwrap_err();
        assert!(err.to_string().contains("bad.jsonl:2"), "{err}");
        assert_eq!(err.exit_code(), 2);
        std::fs::write(&path, "{\"name\":\"a\"}\n").unwrap();
        let err = ResumableJsonl::open(&path, "id").unwrap_err();
        assert!(err.to_string().contains("bad.jsonl:1"), "{err}");
    }

    #[test]
    fn atomic_write_replaces_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("r.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
