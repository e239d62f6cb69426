//! The thread under every transcoder: it opens its codecs there (libav's open blocks), reports the outcome
//! through an `Opening`, then takes inputs from a bounded queue until the handle lets go of it.

use super::{Opening, TranscodeError};
use std::sync::mpsc;
use std::time::Instant;

/// The handle side of a transcoder thread: its input queue and its join handle. Dropping it detaches (the thread
/// transcodes what is queued, then ends); `finish` waits for that.
pub(crate) struct Worker<I> {
    tx: Option<mpsc::SyncSender<I>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Start thread `name` with a queue of `queue` inputs: `open` makes the pipeline there, `each` runs per input.
/// `kind` names the transcoder in metrics and logs; `label` the anchor it works for.
pub(crate) fn spawn<I, P, T>(
    name: String,
    queue: usize,
    kind: &'static str,
    label: String,
    open: impl FnOnce() -> Result<P, TranscodeError> + Send + 'static,
    mut each: impl FnMut(&mut P, I) -> Result<(), TranscodeError> + Send + 'static,
    handle: impl FnOnce(Worker<I>) -> T,
) -> Opening<T>
where
    I: Send + 'static,
{
    super::init_libav();
    let (tx, rx) = mpsc::sync_channel::<I>(queue);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), TranscodeError>>();
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut pipeline = match open() {
                Ok(p) => {
                    if ready_tx.send(Ok(())).is_err() {
                        return; // nobody waits for it any more
                    }
                    p
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let seconds = metrics::histogram!("roomgate_transcode_seconds", "kind" => kind);
            for input in rx {
                let started = Instant::now();
                if let Err(e) = each(&mut pipeline, input) {
                    tracing::warn!(anchor = %label, kind, error = %e, "a frame could not be transcoded; skipped");
                    metrics::counter!("roomgate_transcode_errors_total", "kind" => kind).increment(1);
                }
                seconds.record(started.elapsed().as_secs_f64());
            }
        })
        .expect("spawning a thread");
    let worker = Worker {
        tx: Some(tx),
        thread: Some(thread),
    };
    Opening::new(handle(worker), ready_rx)
}

impl<I> Worker<I> {
    /// Queue an input without waiting: `Overloaded` when the queue is full.
    pub fn push(&self, input: I) -> Result<(), TranscodeError> {
        let tx = self.tx.as_ref().ok_or(TranscodeError::Stopped)?;
        tx.try_send(input).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => TranscodeError::Overloaded,
            mpsc::TrySendError::Disconnected(_) => TranscodeError::Stopped,
        })
    }

    /// Queue an input, waiting while the queue is full (sources that can be slowed down, such as files).
    pub fn push_blocking(&self, input: I) -> Result<(), TranscodeError> {
        let tx = self.tx.as_ref().ok_or(TranscodeError::Stopped)?;
        tx.send(input).map_err(|_| TranscodeError::Stopped)
    }

    /// Let the thread transcode what is queued and wait until it has (blocks: threads of our own only).
    pub fn finish(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<I> Drop for Worker<I> {
    fn drop(&mut self) {
        self.tx.take();
    }
}
