//! The tenant's memory pool: which instance may lend, which needs to borrow,
//! and every loan between them (thesis §3.3, eq. 3.1, §4.3). Pure decision
//! logic, no I/O: the tenant actor feeds it events and applies the limits it
//! returns.
//!
//! An entry is the thesis's `(id, T_lim, M_peak_native, F_max,
//! T_current_lim, peers, deltas)`: `initial`, `u_max`, `f_max`, `current`,
//! and the loans it is part of. Profiles are padded ×1.1. Classification:
//! `1.1·U + 1.1·F < 0.9·T_lim` → harvest (can lend); `> T_lim` → allocation
//! (needs to borrow `D = need − T_current`); otherwise self-sufficient.
//! Functions without a measured profile are self-sufficient.
//!
//! Invariant, checked by the property tests: Σ current = Σ initial, always;
//! every loan moves bytes from a lender's current to a borrower's current.
//!
//! Layout: this file holds the pool's types and its events (what the actor
//! calls); `lending` how an event moves memory (surplus, deficit, loans made
//! and undone); `tests` the rules event by event and the property tests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::SharingScope;

mod lending;
#[cfg(test)]
mod tests;

/// A function's measured profile (unpadded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Peak native memory (U_max).
    pub u_max: u64,
    /// Largest file (F_max).
    pub f_max: u64,
}

/// What the pool needs to know about a new instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Function name (for the `function` scope).
    pub function: String,
    /// Workflow (for the `workflow` scope); empty = none.
    pub workflow: String,
    /// T_lim.
    pub initial: u64,
    /// Measured profile, if any.
    pub profile: Option<Profile>,
}

/// The pool's view of one instance. Private: only the pool's own rules
/// change it, so the invariant is checked in one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// Function name.
    function: String,
    /// Workflow, empty for none.
    workflow: String,
    /// T_lim: the limit it was started with.
    initial: u64,
    /// T_current_lim.
    current: u64,
    /// Padded profile need (1.1·U + 1.1·F), `None` when unmeasured.
    need: Option<u64>,
    /// An invocation is queued or running.
    busy: bool,
    /// False after a safeguard: it lends no more.
    harvestable: bool,
}

/// Where an entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Has memory to spare.
    Harvest,
    /// Needs more than its limit.
    Allocation,
    /// Neither.
    SelfSufficient,
}

impl Entry {
    /// Its class (thesis thresholds 0.9 and 1.0).
    fn class(&self) -> Class {
        match self.need {
            None => Class::SelfSufficient,
            Some(n) if (n as u128) * 10 < (self.initial as u128) * 9 => Class::Harvest,
            Some(n) if n > self.initial => Class::Allocation,
            Some(_) => Class::SelfSufficient,
        }
    }

    /// A running harvest-pool instance not stopped by a safeguard: the only
    /// kind that lends.
    fn may_lend(&self) -> bool {
        self.busy && self.harvestable && self.class() == Class::Harvest
    }
}

/// Bytes moved from `lender` to `borrower`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Loan {
    /// Who gave.
    lender: String,
    /// Who received.
    borrower: String,
    /// How much.
    bytes: u64,
}

/// A limit the actor must apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The instance.
    pub id: String,
    /// Its new T_current_lim.
    pub limit: u64,
}

/// One tenant's pool on this node. Its fields are private: every change
/// goes through an event method, which keeps Σ current = Σ initial.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    /// Entries by instance id.
    entries: BTreeMap<String, Entry>,
    /// Every open loan.
    loans: Vec<Loan>,
    /// Which instances may share.
    scope: SharingScope,
}

/// Current usage of an instance, if the caller knows it.
pub type Usage<'a> = &'a dyn Fn(&str) -> Option<u64>;

/// 1.1 × `x`, rounded up.
pub fn pad(x: u64) -> u64 {
    x.saturating_add(x.div_ceil(10))
}

impl Pool {
    /// An empty pool sharing within `scope`.
    pub fn new(scope: SharingScope) -> Pool {
        Pool {
            scope,
            ..Pool::default()
        }
    }

    /// `Init`: a new instance joins with its initial limit.
    pub fn init(&mut self, id: &str, m: Member) {
        let need = m.profile.map(|p| pad(p.u_max).saturating_add(pad(p.f_max)));
        self.entries.insert(
            id.to_string(),
            Entry {
                function: m.function,
                workflow: m.workflow,
                initial: m.initial,
                current: m.initial,
                need,
                busy: false,
                harvestable: true,
            },
        );
    }

    /// `Invoke`: the instance's queue became non-empty. An allocation
    /// instance borrows its deficit; a harvest instance serves waiting
    /// deficits.
    pub fn invoke(&mut self, id: &str, usage: Usage<'_>) -> Vec<Change> {
        self.tracked(|p| {
            let Some(e) = p.entries.get_mut(id) else {
                return;
            };
            e.busy = true;
            match e.class() {
                Class::Allocation => p.borrow(id, usage),
                Class::Harvest => p.serve_waiting(id, usage),
                Class::SelfSufficient => {}
            }
        })
    }

    /// `Result`: the instance's queue drained. Every loan it is part of is
    /// undone; borrowers that lost memory try other lenders.
    pub fn result(&mut self, id: &str, usage: Usage<'_>) -> Vec<Change> {
        self.tracked(|p| {
            if let Some(e) = p.entries.get_mut(id) {
                e.busy = false;
            }
            let hurt = p.rollback(|l| l.lender == id || l.borrower == id);
            p.reborrow(hurt, usage);
        })
    }

    /// `Safeguard`: the instance nears its limit. Every loan it made is
    /// undone and it lends no more.
    pub fn safeguard(&mut self, id: &str, usage: Usage<'_>) -> Vec<Change> {
        self.tracked(|p| {
            if let Some(e) = p.entries.get_mut(id) {
                e.harvestable = false;
            }
            let hurt = p.rollback(|l| l.lender == id);
            p.reborrow(hurt, usage);
        })
    }

    /// `Terminate`: the instance is gone. Its loans are undone and it leaves.
    pub fn terminate(&mut self, id: &str, usage: Usage<'_>) -> Vec<Change> {
        let mut changes = self.tracked(|p| {
            let hurt = p.rollback(|l| l.lender == id || l.borrower == id);
            // Gone before anyone borrows again, so nobody borrows from it.
            p.entries.remove(id);
            p.reborrow(hurt, usage);
        });
        changes.retain(|c| c.id != id);
        changes
    }

    /// Sum of initial limits.
    pub fn total_initial(&self) -> u64 {
        self.entries.values().map(|e| e.initial).sum()
    }

    /// Sum of current limits.
    pub fn total_current(&self) -> u64 {
        self.entries.values().map(|e| e.current).sum()
    }

    /// Bytes `id` has lent.
    pub fn lent(&self, id: &str) -> u64 {
        self.on_loan(|l| l.lender == id)
    }

    /// Bytes `id` has borrowed.
    pub fn borrowed(&self, id: &str) -> u64 {
        self.on_loan(|l| l.borrower == id)
    }

    /// Bytes on loan between the tenant's instances.
    pub fn loaned(&self) -> u64 {
        self.on_loan(|_| true)
    }

    /// Bytes of the open loans that match `which`.
    fn on_loan(&self, which: impl Fn(&Loan) -> bool) -> u64 {
        self.loans
            .iter()
            .filter(|l| which(l))
            .map(|l| l.bytes)
            .sum()
    }

    /// Open loans.
    pub fn loan_count(&self) -> usize {
        self.loans.len()
    }

    /// Instances in the pool.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no instance is in the pool.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `id` is in the pool (it started and was not terminated).
    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// T_current_lim of `id`: the limit the actor must apply.
    pub fn limit(&self, id: &str) -> Option<u64> {
        self.entries.get(id).map(|e| e.current)
    }

    /// Whether a safeguard on `id` would change anything: it may still lend,
    /// or it has lent.
    pub fn lends_or_may_lend(&self, id: &str) -> bool {
        self.entries
            .get(id)
            .is_some_and(|e| e.harvestable || self.lent(id) > 0)
    }

    /// The instances whose usage a decision about `subject` reads: `subject`
    /// itself and every instance that may lend (usage bounds a lender's
    /// surplus). The actor reads only these cgroups, not every instance's.
    pub fn usage_wanted<'a>(&'a self, subject: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(id, e)| id.as_str() == subject || e.may_lend())
            .map(|(id, _)| id.as_str())
    }

    /// Terminates every instance (rolling every loan back) and shares within
    /// `scope` from now on: a restarted agent's view of a ledger whose
    /// instances died with the previous run.
    pub fn restart(&mut self, scope: SharingScope) {
        let ids: Vec<String> = self.entries.keys().cloned().collect();
        for id in &ids {
            self.terminate(id, &|_| None);
        }
        self.scope = scope;
    }
}
