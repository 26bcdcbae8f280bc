//! The commit thread: writes sealed batches to the active segment, fsyncs them, then replaces the head
//! file, while the writer goes on sealing the next batch. One batch is in flight at a time.
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;

use super::signing::HeadFile;

/// Work for the commit thread.
pub enum Job {
    /// Append `bytes` after the first `durable_len` bytes of the file, sync, then write `head`.
    Write { bytes: Vec<u8>, durable_len: u64, head: HeadFile },
    /// Continue in another file (after rotation).
    Switch(File),
    #[cfg(test)]
    FailWrites(Option<io::ErrorKind>),
}

/// What became of a `Write`.
pub enum Outcome {
    /// Durable; the file is now `len` bytes. `bytes` comes back for reuse.
    Written { len: u64, bytes: Vec<u8> },
    /// Nothing of `bytes` may be relied on; the next write starts again from the durable length.
    Failed { error: io::Error, bytes: Vec<u8> },
}

pub struct Committer {
    jobs: SyncSender<Job>,
    outcomes: Receiver<Outcome>,
    thread: Option<JoinHandle<()>>,
    in_flight: bool,
}

impl Committer {
    pub fn start(file: File, head_path: PathBuf) -> io::Result<Self> {
        let (jobs, job_queue) = mpsc::sync_channel(1);
        let (outcome_sender, outcomes) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("audit-commit".into())
            .spawn(move || run(file, head_path, job_queue, outcome_sender))?;
        Ok(Committer { jobs, outcomes, thread: Some(thread), in_flight: false })
    }

    pub fn busy(&self) -> bool {
        self.in_flight
    }

    /// Hands a job over; a `Write` must not be sent while another is in flight.
    pub fn send(&mut self, job: Job) -> io::Result<()> {
        debug_assert!(!(self.in_flight && matches!(job, Job::Write { .. })));
        if matches!(job, Job::Write { .. }) {
            self.in_flight = true;
        }
        self.jobs.send(job).map_err(|_| thread_gone())
    }

    /// The outcome of the write in flight, if it is done (`wait`: block until it is).
    pub fn outcome(&mut self, wait: bool) -> io::Result<Option<Outcome>> {
        if !self.in_flight {
            return Ok(None);
        }
        let outcome = if wait {
            self.outcomes.recv().map_err(|_| thread_gone())?
        } else {
            match self.outcomes.try_recv() {
                Ok(outcome) => outcome,
                Err(TryRecvError::Empty) => return Ok(None),
                Err(TryRecvError::Disconnected) => return Err(thread_gone()),
            }
        };
        self.in_flight = false;
        Ok(Some(outcome))
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once the job in flight (if any) is done.
        let (closed, _) = mpsc::sync_channel(1);
        self.jobs = closed;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn thread_gone() -> io::Error {
    io::Error::other("the audit commit thread stopped")
}

fn run(mut file: File, head_path: PathBuf, jobs: Receiver<Job>, outcomes: mpsc::Sender<Outcome>) {
    #[cfg(test)]
    let mut fail_writes: Option<io::ErrorKind> = None;
    for job in jobs {
        let outcome = match job {
            Job::Switch(next) => {
                file = next;
                continue;
            }
            #[cfg(test)]
            Job::FailWrites(kind) => {
                fail_writes = kind;
                continue;
            }
            Job::Write { bytes, durable_len, head } => {
                #[cfg(test)]
                if let Some(kind) = fail_writes {
                    let _ = outcomes.send(Outcome::Failed { error: io::Error::from(kind), bytes });
                    continue;
                }
                let started = std::time::Instant::now();
                let written = write(&mut file, &bytes, durable_len)
                    .and_then(|len| head.write(&head_path).map(|()| len));
                crate::metrics::histogram::COMMIT.observe(started.elapsed());
                match written {
                    Ok(len) => Outcome::Written { len, bytes },
                    Err(error) => Outcome::Failed { error, bytes },
                }
            }
        };
        if outcomes.send(outcome).is_err() {
            return;
        }
    }
}

fn write(file: &mut File, bytes: &[u8], durable_len: u64) -> io::Result<u64> {
    // After a failed write or fsync the file's tail is unknown: cut back to what was durable.
    if file.metadata()?.len() != durable_len {
        file.set_len(durable_len)?;
        file.seek(SeekFrom::End(0))?;
    }
    file.write_all(bytes)?;
    file.sync_data()?;
    Ok(durable_len + bytes.len() as u64)
}
