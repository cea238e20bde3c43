//! The tier's one lock: a futex mutex that survives `fork`.
//!
//! All tier state (fd table, open file descriptions, inodes, mappings) sits
//! behind this lock. One lock keeps the invariants easy to see (an inode's
//! size, its mapping and every fd on it change together); the critical
//! sections are a table lookup and a `memcpy`. The fork hook takes the lock
//! before `fork` and releases it in both processes, so a child never inherits
//! a lock held by a thread that does not exist there.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, Ordering};

/// A value guarded by a futex lock (0 free, 1 held, 2 held with waiters).
pub struct Locked<T> {
    state: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` only happens through a `Guard`, and at most one
// guard exists at a time (the futex protocol below).
unsafe impl<T: Send> Sync for Locked<T> {}

impl<T> Locked<T> {
    /// A new, unlocked cell.
    pub const fn new(value: T) -> Self {
        Locked {
            state: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, sleeping on the futex while it is contended.
    pub fn lock(&self) -> Guard<'_, T> {
        if self
            .state
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.state.swap(2, Ordering::Acquire) != 0 {
                crate::sys::futex_wait(&self.state, 2);
            }
        }
        Guard { cell: self }
    }

    /// Forgets any holder: only for the child of `fork`, where the holder is
    /// either our own forking thread or a thread that no longer exists.
    pub fn reset_in_child(&self) {
        self.state.store(0, Ordering::Release);
    }

    fn unlock(&self) {
        if self.state.swap(0, Ordering::Release) == 2 {
            crate::sys::futex_wake(&self.state);
        }
    }
}

/// Proof of holding the lock; derefs to the value.
pub struct Guard<'a, T> {
    cell: &'a Locked<T>,
}

impl<T> Guard<'_, T> {
    /// Releases without unlocking: the fork hook hands the lock across `fork`
    /// and releases it on each side explicitly.
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl<T> Locked<T> {
    /// Releases a lock that was leaked with [`Guard::leak`].
    pub fn unlock_leaked(&self) {
        self.unlock();
    }
}

impl<T> std::ops::Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: holding the guard means holding the lock.
        unsafe { &*self.cell.value.get() }
    }
}

impl<T> std::ops::DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: holding the guard means holding the lock exclusively.
        unsafe { &mut *self.cell.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        self.cell.unlock();
    }
}
