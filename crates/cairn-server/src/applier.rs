//! The single writer: applies commands in arrival order and makes them durable in batches.
//!
//! Commands wait in a bounded queue. The applier thread takes whatever has queued (up to
//! [`BATCH_COMMANDS_MAX`]), applies it under the kernel's write lock, commits the batch with one
//! fsync, and only then releases the lock and answers. So concurrent clients share an fsync, and
//! no reader or client sees a write that a crash could still take back.

use std::sync::Arc;

use cairn_kernel::{Command, CommandResponse, Durability, Error, Kernel};
use tokio::sync::{RwLock, mpsc, oneshot};
use tonic::Status;

use crate::status::kernel_status;

/// Commands waiting for the applier; past this, submitters wait (backpressure).
const QUEUE_COMMANDS_MAX: usize = 4096;
/// Commands applied per commit.
const BATCH_COMMANDS_MAX: usize = 1024;

struct Proposal {
    command: Command,
    reply: oneshot::Sender<Result<CommandResponse, Error>>,
}

#[derive(Clone)]
pub struct Applier {
    queue: mpsc::Sender<Proposal>,
}

impl Applier {
    /// Starts the applier thread. Once every [`Applier`] handle is dropped it applies what is
    /// still queued, drops its share of the kernel and ends; join it before exiting, so RocksDB
    /// closes before the process does.
    pub fn spawn(
        kernel: Arc<RwLock<Kernel>>,
    ) -> std::io::Result<(Applier, std::thread::JoinHandle<()>)> {
        let (queue, proposals) = mpsc::channel(QUEUE_COMMANDS_MAX);
        let thread = std::thread::Builder::new()
            .name("cairn-applier".into())
            .spawn(move || {
                let applying = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(&kernel, proposals)
                }));
                if applying.is_err() {
                    // A broken invariant: the panic message is already logged. Serving reads
                    // without a writer would only hide it.
                    tracing::error!("the applier panicked; stopping");
                    std::process::exit(1);
                }
            })?;
        Ok((Applier { queue }, thread))
    }

    /// Applies `command` after everything submitted before it; answers once it is durable.
    pub async fn submit(&self, command: Command) -> Result<CommandResponse, Status> {
        let (reply, response) = oneshot::channel();
        self.queue
            .send(Proposal { command, reply })
            .await
            .map_err(shutting_down)?;
        response
            .await
            .map_err(shutting_down)?
            .map_err(|error| kernel_status(&error))
    }
}

/// The applier is gone: the node is stopping.
fn shutting_down<E>(_: E) -> Status {
    Status::unavailable("cairn: the node is shutting down")
}

fn run(kernel: &RwLock<Kernel>, mut proposals: mpsc::Receiver<Proposal>) {
    let mut batch = Vec::with_capacity(BATCH_COMMANDS_MAX);
    while proposals.blocking_recv_many(&mut batch, BATCH_COMMANDS_MAX) > 0 {
        let mut kernel = kernel.blocking_write();
        let mut results = Vec::with_capacity(batch.len());
        for proposal in &batch {
            let index = kernel.applied_index() + 1;
            let result = kernel.apply(index, &proposal.command);
            if let Err(Error::Storage(error)) = &result {
                fail_stop(error);
            }
            results.push(result);
        }
        if let Err(error) = kernel.commit(Durability::Fsync) {
            fail_stop(&error);
        }
        drop(kernel);
        for (proposal, result) in batch.drain(..).zip(results) {
            // A client that gave up no longer waits for its answer; its write stands.
            let _ = proposal.reply.send(result);
        }
    }
}

/// Memory is now ahead of disk: answering anything more could acknowledge what a restart will
/// not have. Stop, and let the restart recover from disk.
fn fail_stop(error: &cairn_kernel::StorageError) -> ! {
    tracing::error!(%error, "storage failed while applying; stopping");
    std::process::exit(1);
}
