//! Syncing the write-ahead log off the connection.
//!
//! The connection runs with `synchronous = NORMAL`: a `COMMIT` appends the group's frames
//! to the WAL and returns without waiting for the disk, so the next group can start at
//! once. What it wrote is then in the operating system's hands: a process killed after
//! the `COMMIT` loses none of it, a machine that loses power may. Each committed group
//! that a caller waits to be durable is handed here, and its callers are told it is
//! durable only after an `fdatasync` of the WAL that began after its `COMMIT` returned. A
//! group whose callers wait only for the commit (done marks) is not handed: it costs no
//! sync of its own, and the next one covers it. One sync serves every group committed
//! while the one before it ran, which is what `synchronous = FULL` did inside each
//! `COMMIT`, with the connection held. SQLite still syncs the WAL's header when it
//! starts the log again, and the WAL and the database around each checkpoint.
//!
//! A sync that fails is never tried again: after a failed `fdatasync` Linux may have
//! dropped the pages it could not write, and a later sync would report success for them.
//! The groups waiting for it, and every turn after it, are refused until the process is
//! restarted, and SQLite then recovers from what the disk holds.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, watch};

use super::Outcome;

/// Groups committed and not yet synced, at most: a commit beyond them waits its place.
const WAITING_GROUPS: usize = 256;

/// One `fdatasync` of the WAL, or what stands in for it in a test.
pub(super) type Sync = Box<dyn FnMut() -> io::Result<()> + Send>;

/// Why the WAL is no longer synced, once it is not; shared with the connection, which
/// refuses turns from then on.
pub(super) type Unsynced = Arc<OnceLock<Arc<str>>>;

/// The WAL of the writer's connection, and the task that syncs it.
pub(super) struct Wal {
    /// Where SQLite keeps it.
    pub(super) file: PathBuf,
    committed: mpsc::Sender<watch::Sender<Outcome>>,
    unsynced: Unsynced,
}

impl Wal {
    /// Syncs `file` from a task started on the current runtime.
    pub(super) fn start(file: PathBuf, unsynced: Unsynced) -> Self {
        let sync = syncing(file.clone());
        Self::with_sync(file, sync, unsynced)
    }

    /// As [`Wal::start`], each sync being `sync`.
    pub(super) fn with_sync(file: PathBuf, sync: Sync, unsynced: Unsynced) -> Self {
        let (committed, groups) = mpsc::channel(WAITING_GROUPS);
        tokio::spawn(sync_groups(sync, groups, Arc::clone(&unsynced)));
        Self {
            file,
            committed,
            unsynced,
        }
    }

    /// Hands a committed group to the syncer, which tells its callers when it is durable.
    pub(super) async fn hand(&self, group: watch::Sender<Outcome>) {
        if let Err(mpsc::error::SendError(group)) = self.committed.send(group).await {
            let error = fail(&self.unsynced, "the WAL's syncer has stopped".into());
            group.send_replace(Outcome::Unsynced(error));
        }
    }
}

/// Syncs the WAL for the groups committed since the last sync, for as long as the
/// connection hands any.
async fn sync_groups(
    mut sync: Sync,
    mut committed: mpsc::Receiver<watch::Sender<Outcome>>,
    unsynced: Unsynced,
) {
    let mut groups = Vec::with_capacity(WAITING_GROUPS);
    while committed.recv_many(&mut groups, WAITING_GROUPS).await > 0 {
        let outcome = match unsynced.get() {
            Some(error) => Outcome::Unsynced(Arc::clone(error)),
            None => match tokio::task::spawn_blocking(move || {
                let synced = sync();
                (synced, sync)
            })
            .await
            {
                Ok((Ok(()), kept)) => {
                    sync = kept;
                    Outcome::Durable
                }
                Ok((Err(error), kept)) => {
                    sync = kept;
                    Outcome::Unsynced(fail(&unsynced, format!("could not sync the WAL: {error}")))
                }
                Err(error) => {
                    let error = fail(&unsynced, format!("syncing the WAL failed: {error}"));
                    for group in groups.drain(..) {
                        group.send_replace(Outcome::Unsynced(Arc::clone(&error)));
                    }
                    return;
                }
            },
        };
        for group in groups.drain(..) {
            group.send_replace(outcome.clone());
        }
    }
}

/// Records that the WAL is no longer synced, and why (the first reason given).
fn fail(unsynced: &Unsynced, error: String) -> Arc<str> {
    let error = unsynced.get_or_init(|| {
        tracing::error!(
            %error,
            "SQLite's WAL is not synced; nothing more is stored until fulfilld is restarted"
        );
        Arc::from(error)
    });
    Arc::clone(error)
}

/// `fdatasync` of the WAL at `file`, through the handle of the last sync unless the file
/// it names was removed (SQLite deletes the WAL when its last connection closes).
/// Read-only is enough on Linux, and it works while the files are immutable.
fn syncing(file: PathBuf) -> Sync {
    let mut open: Option<File> = None;
    Box::new(move || {
        let handle = match open.take() {
            Some(handle) if handle.metadata()?.nlink() > 0 => handle,
            _ => File::open(&file)?,
        };
        handle.sync_data()?;
        open = Some(handle);
        Ok(())
    })
}
