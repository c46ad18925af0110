//! The host side of `cairn:plugin`: each import answered from the kernel's [`PluginHost`].

use cairn_kernel::plugin::{HostError, PluginHost};
use cairn_kernel::{KeyRange, StorageError};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use wasmtime::ResourceLimiter;

use crate::bindings::{context, kv, log, random};

/// A store's data for one call.
pub struct CallState {
    /// The kernel's view for this call. Set by [`CallState::new`] from a `&mut dyn PluginHost`
    /// that outlives the store: the runtime drops the store before the call returns.
    host: *mut (dyn PluginHost + 'static),
    rng: ChaCha8Rng,
    pub limiter: MemoryLimiter,
    /// The store failure that trapped the call, to be reported as such rather than as a trap.
    pub storage_error: Option<StorageError>,
}

impl CallState {
    /// # Safety
    /// The store holding this state must be dropped before `host`'s borrow ends.
    pub unsafe fn new(host: &mut dyn PluginHost, memory_bytes: u64) -> CallState {
        let seed = host.context().seed;
        // SAFETY: only the lifetime is erased; the caller keeps `host` alive for the store's life.
        let host: *mut (dyn PluginHost + 'static) = unsafe { std::mem::transmute(host) };
        CallState {
            host,
            rng: ChaCha8Rng::seed_from_u64(seed),
            limiter: MemoryLimiter {
                memory_bytes,
                denied: false,
            },
            storage_error: None,
        }
    }

    fn host(&mut self) -> &mut dyn PluginHost {
        // SAFETY: see `CallState::new`; `&mut self` makes this the only live reference.
        unsafe { &mut *self.host }
    }

    /// Turns a host refusal into the guest's error, or a store failure into a trap.
    fn answer<T>(
        &mut self,
        result: Result<T, HostError>,
    ) -> wasmtime::Result<Result<T, kv::KvError>> {
        match result {
            Ok(value) => Ok(Ok(value)),
            Err(HostError::Denied(what)) => Ok(Err(kv::KvError::Denied(what))),
            Err(HostError::ReadOnly) => Ok(Err(kv::KvError::ReadOnly)),
            Err(HostError::LeaseNotFound(lease)) => Ok(Err(kv::KvError::LeaseNotFound(lease))),
            Err(HostError::TooLarge(what)) => Ok(Err(kv::KvError::TooLarge(what))),
            Err(HostError::Storage(error)) => {
                let message = error.to_string();
                self.storage_error = Some(error);
                Err(wasmtime::Error::msg(message))
            }
        }
    }
}

/// Caps linear memory and remembers whether it refused to grow, so that a call stopped by it is
/// reported as over its memory limit rather than as a bare trap.
pub struct MemoryLimiter {
    memory_bytes: u64,
    pub denied: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired as u64 <= self.memory_bytes;
        self.denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_MAX)
    }
}

/// Largest table a plugin may grow.
const TABLE_ELEMENTS_MAX: usize = 100_000;

fn to_wit(kv: cairn_kernel::KeyValue) -> kv::KeyValue {
    kv::KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

impl kv::Host for CallState {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Result<Option<kv::KeyValue>, kv::KvError>> {
        let result = self.host().get(&key).map(|kv| kv.map(to_wit));
        self.answer(result)
    }

    fn range(
        &mut self,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
    ) -> wasmtime::Result<Result<kv::RangeResult, kv::KvError>> {
        let range = KeyRange::from_etcd(start, end);
        let result = self
            .host()
            .range(&range, limit)
            .map(|(kvs, more)| kv::RangeResult {
                kvs: kvs.into_iter().map(to_wit).collect(),
                more,
            });
        self.answer(result)
    }

    fn put(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    ) -> wasmtime::Result<Result<(), kv::KvError>> {
        let result = self.host().put(key, value, lease);
        self.answer(result)
    }

    fn delete_range(
        &mut self,
        start: Vec<u8>,
        end: Vec<u8>,
    ) -> wasmtime::Result<Result<u32, kv::KvError>> {
        let range = KeyRange::from_etcd(start, end);
        let result = self.host().delete_range(&range);
        self.answer(result)
    }
}

impl context::Host for CallState {
    fn now_ms(&mut self) -> u64 {
        self.host().context().now_ms
    }

    fn revision(&mut self) -> i64 {
        self.host().context().revision
    }

    fn caller(&mut self) -> String {
        self.host().context().caller.clone()
    }

    fn lease(&mut self) -> i64 {
        self.host().context().lease
    }
}

impl random::Host for CallState {
    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
}

impl log::Host for CallState {
    fn write(&mut self, message: String) {
        self.host().log(message);
    }
}
