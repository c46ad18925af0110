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
    /// Work done by the host for the guest, in fuel units, and how much it may do: the guest's
    /// fuel pays for its own instructions only, so without this a cheap loop of host calls
    /// could keep apply busy far longer than its fuel suggests.
    host_work: u64,
    host_budget: u64,
    /// Whether the host budget ran out: the call is then out of fuel.
    pub host_budget_spent: bool,
}

/// What a kv call costs in fuel units besides its bytes (one unit each), and each key a read
/// returns: roughly the instructions the host spends on them.
const KV_CALL_UNITS: u64 = 1_000;
const KV_KEY_UNITS: u64 = 100;

impl CallState {
    /// # Safety
    /// The store holding this state must be dropped before `host`'s borrow ends.
    pub unsafe fn new(host: &mut dyn PluginHost, memory_bytes: u64, fuel: u64) -> CallState {
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
            host_work: 0,
            host_budget: fuel,
            host_budget_spent: false,
        }
    }

    fn host(&mut self) -> &mut dyn PluginHost {
        // SAFETY: see `CallState::new`; `&mut self` makes this the only live reference.
        unsafe { &mut *self.host }
    }

    /// Charges `units` of host work; traps once the budget is spent.
    fn charge(&mut self, units: u64) -> wasmtime::Result<()> {
        self.host_work = self.host_work.saturating_add(units);
        if self.host_work > self.host_budget {
            return Err(self.spent());
        }
        Ok(())
    }

    /// Marks the budget spent, and gives the trap that ends the call.
    fn spent(&mut self) -> wasmtime::Error {
        self.host_budget_spent = true;
        wasmtime::Error::msg("host work over the call's fuel")
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
        self.charge(KV_CALL_UNITS + key.len() as u64)?;
        let result = self.host().get(&key).map(|kv| kv.map(to_wit));
        if let Ok(Some(kv)) = &result {
            self.charge(KV_KEY_UNITS + (kv.key.len() + kv.value.len()) as u64)?;
        }
        self.answer(result)
    }

    fn range(
        &mut self,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
    ) -> wasmtime::Result<Result<kv::RangeResult, kv::KvError>> {
        self.charge(KV_CALL_UNITS + (start.len() + end.len()) as u64)?;
        let range = KeyRange::from_etcd(start, end);
        let result = self
            .host()
            .range(&range, limit)
            .map(|(kvs, more)| kv::RangeResult {
                kvs: kvs.into_iter().map(to_wit).collect(),
                more,
            });
        if let Ok(read) = &result {
            let bytes: usize = read
                .kvs
                .iter()
                .map(|kv| kv.key.len() + kv.value.len())
                .sum();
            self.charge(KV_KEY_UNITS * read.kvs.len() as u64 + bytes as u64)?;
        }
        self.answer(result)
    }

    fn put(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    ) -> wasmtime::Result<Result<(), kv::KvError>> {
        self.charge(KV_CALL_UNITS + (key.len() + value.len()) as u64)?;
        let result = self.host().put(key, value, lease);
        self.answer(result)
    }

    fn delete_range(
        &mut self,
        start: Vec<u8>,
        end: Vec<u8>,
    ) -> wasmtime::Result<Result<u32, kv::KvError>> {
        self.charge(KV_CALL_UNITS + (start.len() + end.len()) as u64)?;
        let range = KeyRange::from_etcd(start, end);
        let affordable = self.host_budget.saturating_sub(self.host_work) / KV_KEY_UNITS;
        let most = u32::try_from(affordable).unwrap_or(u32::MAX);
        let result = match self.host().delete_range(&range, most) {
            Ok(Some(deleted)) => {
                self.charge(KV_KEY_UNITS * u64::from(deleted))?;
                Ok(deleted)
            }
            // More keys than the fuel left pays for: the call fails as if it had deleted them.
            Ok(None) => return Err(self.spent()),
            Err(refused) => Err(refused),
        };
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
