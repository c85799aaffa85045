//! The durable record of each router's state, so that an nginx-ha that crashed (or re-executed
//! itself for an upgrade) resumes MASTER instead of costing clients a failover and a failback.
//!
//! `state_dir/vrrp-state.json` is rewritten atomically on every state change. While any router
//! is MASTER its modification time is refreshed at each advert: a starting daemon reads "when
//! did the previous one last advertise" from it, and compares that with Master_Down_Interval.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::router::State;
use crate::statefile::{self, StateFileError};

const FILE: &str = "vrrp-state.json";
/// Largest record read: a router's entry is ~40 bytes, so 255 routers per interface on many
/// interfaces stay far below it; anything larger was not written by nginx-ha.
pub const MAX_RECORD_BYTES: u64 = 256 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    /// Router name → its state when the record was written.
    pub routers: BTreeMap<String, State>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot write {path}: {source}; fix [daemon] state_dir (it must be a writable directory)")]
    Write { path: PathBuf, source: StateFileError },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// A link, a non-file, or a record larger than MAX_RECORD_BYTES: the daemon refuses to start
    /// rather than guess, so the VIPs stay as they are until the file is fixed.
    #[error("the VRRP state record is refused, and no VIP is touched: {0}")]
    Refused(#[source] StateFileError),
    #[error("{path} is not a valid state record ({source}); it is ignored and rewritten")]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

/// The record as the previous daemon left it, and how long ago it last advertised as MASTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    pub record: StateRecord,
    pub elapsed: Duration,
}

pub struct Recorder {
    path: PathBuf,
    /// The file as last written, for the heartbeat.
    file: Option<File>,
    last: Option<StateRecord>,
}

impl Recorder {
    pub fn new(state_dir: &Path) -> Recorder {
        Recorder { path: state_dir.join(FILE), file: None, last: None }
    }

    /// What the previous daemon recorded; `Ok(None)` without a record. A record from the
    /// future (a clock step) counts as just written.
    pub fn load(&self) -> Result<Option<Previous>, RecordError> {
        let read_error = |source| RecordError::Read { path: self.path.clone(), source };
        let (text, meta) = match statefile::read(&self.path, MAX_RECORD_BYTES) {
            Ok(Some(read)) => read,
            Ok(None) => return Ok(None),
            Err(StateFileError::Io { source, .. }) => return Err(read_error(source)),
            Err(refused) => return Err(RecordError::Refused(refused)),
        };
        let record =
            serde_json::from_slice(&text).map_err(|source| RecordError::Corrupt { path: self.path.clone(), source })?;
        let modified = meta.modified().map_err(read_error)?;
        let elapsed = SystemTime::now().duration_since(modified).unwrap_or_default();
        Ok(Some(Previous { record, elapsed }))
    }

    /// Writes `record` if it changed: temp file, fsync, rename, fsync of the directory, so a
    /// crash leaves the old record or the new one, never a torn one.
    pub fn save(&mut self, record: &StateRecord) -> Result<(), RecordError> {
        if self.last.as_ref() == Some(record) {
            return Ok(());
        }
        let write_error = |source| RecordError::Write { path: self.path.clone(), source };
        let text = serde_json::to_vec_pretty(record).expect("a record serializes");
        let file = write_atomic(&self.path, &text).map_err(write_error)?;
        self.file = Some(file);
        self.last = Some(record.clone());
        Ok(())
    }

    /// "Still MASTER now": refreshes the record's modification time (no data is written).
    pub fn heartbeat(&mut self) -> Result<(), RecordError> {
        let Some(file) = &self.file else { return Ok(()) };
        file.set_modified(SystemTime::now()).map_err(|source| RecordError::Write {
            path: self.path.clone(),
            source: StateFileError::Io { action: "touch", path: self.path.clone(), source },
        })
    }
}

/// Writes the state record on a thread of its own, so that the VRRP thread never waits for the
/// disk. An fsync on a busy disk takes 100 ms and more (seen in the fault storm with builds
/// running beside it); done on the VRRP thread it delayed a takeover's advert past the peer's
/// master-down timer, and both nodes held the VIPs. The record is only read by the next
/// nginx-ha at its start, so it may trail the routers by a moment: an `upgrade` and a stop
/// [`flush`](RecordWriter::flush) it first.
pub struct RecordWriter {
    jobs: std::sync::mpsc::Sender<Job>,
    /// The thread is gone (it panicked): said once.
    gone: bool,
}

enum Job {
    Save(StateRecord),
    Heartbeat,
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl RecordWriter {
    pub fn spawn(recorder: Recorder) -> std::io::Result<RecordWriter> {
        let (jobs, inbox) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("vrrp-record".into()).spawn(move || write_jobs(recorder, inbox))?;
        Ok(RecordWriter { jobs, gone: false })
    }

    /// Writes `record` (if it changed), soon.
    pub fn save(&mut self, record: StateRecord) {
        self.send(Job::Save(record));
    }

    /// Refreshes the record's time ("still MASTER now"), soon.
    pub fn heartbeat(&mut self) {
        self.send(Job::Heartbeat);
    }

    /// Answered once everything asked before is written (at once if the writer is gone).
    pub fn flush(&mut self) -> tokio::sync::oneshot::Receiver<()> {
        let (done, written) = tokio::sync::oneshot::channel();
        self.flush_then(done);
        written
    }

    /// Sends `()` on `done` once everything asked before is written (drops it if the writer
    /// is gone): for a caller that waits elsewhere.
    pub fn flush_then(&mut self, done: tokio::sync::oneshot::Sender<()>) {
        self.send(Job::Flush(done));
    }

    fn send(&mut self, job: Job) {
        if self.jobs.send(job).is_err() && !self.gone {
            self.gone = true;
            tracing::error!("the VRRP state record's writer thread is gone; a restarted nginx-ha cannot resume MASTER");
        }
    }
}

/// The writer thread: takes every job queued, writes the newest record (the older ones are
/// moot), refreshes the time, then answers the flushes. Ends with the last sender.
fn write_jobs(mut recorder: Recorder, inbox: std::sync::mpsc::Receiver<Job>) {
    // Writing failed last time: said once until it works again.
    let mut failing = false;
    while let Ok(first) = inbox.recv() {
        let (mut save, mut heartbeat, mut flushes) = (None, false, Vec::new());
        for job in std::iter::once(first).chain(inbox.try_iter()) {
            match job {
                Job::Save(record) => save = Some(record),
                Job::Heartbeat => heartbeat = true,
                Job::Flush(done) => flushes.push(done),
            }
        }
        // A save of an unchanged record writes nothing: the heartbeat still refreshes the time.
        let mut result = save.map_or(Ok(()), |record| recorder.save(&record));
        if heartbeat && result.is_ok() {
            result = recorder.heartbeat();
        }
        match result {
            Ok(()) if failing => {
                tracing::info!("the VRRP state record is written again");
                failing = false;
            }
            Err(e) if !failing => {
                tracing::warn!("{e}; a restarted nginx-ha cannot resume MASTER without it");
                failing = true;
            }
            _ => {}
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Replaces `path` with `contents` atomically and durably (0600); returns the new file, open.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<File, StateFileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    statefile::write_atomic(path, &dir.join(format!(".{name}.{}.tmp", std::process::id())), contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_ages() {
        let dir = tempfile::tempdir().unwrap();
        let mut recorder = Recorder::new(dir.path());
        assert_eq!(recorder.load().unwrap(), None);
        let record = StateRecord { routers: [("VI_1".to_string(), State::Master)].into() };
        recorder.save(&record).unwrap();
        let previous = recorder.load().unwrap().unwrap();
        assert_eq!(previous.record, record);
        assert!(previous.elapsed < Duration::from_secs(5));
        recorder.heartbeat().unwrap();
        assert!(!dir.path().read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
    }

    #[test]
    fn the_writer_writes_the_newest_record_by_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = RecordWriter::spawn(Recorder::new(dir.path())).unwrap();
        for state in [State::Backup, State::Master, State::Backup, State::Master] {
            writer.save(StateRecord { routers: [("VI_1".to_string(), state)].into() });
        }
        writer.heartbeat();
        writer.flush().blocking_recv().unwrap();
        let previous = Recorder::new(dir.path()).load().unwrap().unwrap();
        assert_eq!(previous.record.routers["VI_1"], State::Master);
        assert!(previous.elapsed < Duration::from_secs(5));
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{\"routers\": {\"VI_1\": \"MAST").unwrap();
        let error = Recorder::new(dir.path()).load().unwrap_err();
        assert!(error.to_string().contains("vrrp-state.json is not a valid state record"), "{error}");
    }

    #[test]
    fn the_record_is_0600_and_an_oversized_or_linked_one_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut recorder = Recorder::new(dir.path());
        recorder.save(&StateRecord { routers: [("VI_1".to_string(), State::Backup)].into() }).unwrap();
        let path = dir.path().join(FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        std::fs::write(&path, vec![b' '; MAX_RECORD_BYTES as usize + 1]).unwrap();
        let text = recorder.load().unwrap_err().to_string();
        assert!(
            text.contains("no VIP is touched")
                && text.contains(&path.display().to_string())
                && text.contains(&format!("more than the {MAX_RECORD_BYTES} bytes"))
                && text.contains("Move it aside"),
            "{text}"
        );

        std::fs::remove_file(&path).unwrap();
        let elsewhere = dir.path().join("elsewhere.json");
        std::fs::write(&elsewhere, br#"{"routers": {"VI_1": "MASTER"}}"#).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        let error = recorder.load().unwrap_err();
        assert!(matches!(error, RecordError::Refused(StateFileError::Symlink(_))), "{error}");
    }

    #[test]
    fn an_unwritable_state_dir_is_an_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let mut recorder = Recorder::new(&blocker);
        let error = recorder.save(&StateRecord::default()).unwrap_err();
        assert!(error.to_string().contains("[daemon] state_dir"), "{error}");
    }
}
