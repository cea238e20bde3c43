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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::SharingScope;

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
        self.loans
            .iter()
            .filter(|l| l.lender == id)
            .map(|l| l.bytes)
            .sum()
    }

    /// Bytes `id` has borrowed.
    pub fn borrowed(&self, id: &str) -> u64 {
        self.loans
            .iter()
            .filter(|l| l.borrower == id)
            .map(|l| l.bytes)
            .sum()
    }

    /// Bytes on loan between the tenant's instances.
    pub fn loaned(&self) -> u64 {
        self.loans.iter().map(|l| l.bytes).sum()
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

    fn tracked(&mut self, f: impl FnOnce(&mut Pool)) -> Vec<Change> {
        // Snapshot without allocating keys: entries keep their order unless
        // one is removed, which only `terminate` does (slow path).
        let before: Vec<u64> = self.entries.values().map(|e| e.current).collect();
        f(self);
        if self.entries.len() == before.len() {
            return self
                .entries
                .iter()
                .zip(before)
                .filter(|((_, e), old)| e.current != *old)
                .map(|((k, e), _)| Change {
                    id: k.clone(),
                    limit: e.current,
                })
                .collect();
        }
        // An entry left (terminate): report every remaining limit; applying
        // an unchanged one is a no-op for the actor.
        self.entries
            .iter()
            .map(|(k, e)| Change {
                id: k.clone(),
                limit: e.current,
            })
            .collect()
    }

    fn in_scope(&self, a: &Entry, b: &Entry) -> bool {
        match self.scope {
            SharingScope::None => false,
            SharingScope::Function => a.function == b.function,
            SharingScope::Workflow => !a.workflow.is_empty() && a.workflow == b.workflow,
            SharingScope::Tenant => true,
        }
    }

    /// What `id` can still lend: its current limit above its need (or its
    /// usage, whichever is larger) plus 10 % of its initial limit.
    fn surplus(&self, id: &str, usage: Usage<'_>) -> u64 {
        let Some(e) = self.entries.get(id) else {
            return 0;
        };
        if !e.may_lend() {
            return 0;
        }
        let need = e.need.unwrap_or(e.initial);
        let used = usage(id).unwrap_or(0);
        let reserve = need.max(used).saturating_add(e.initial / 10);
        e.current.saturating_sub(reserve)
    }

    /// What `id` still lacks.
    fn deficit(&self, id: &str) -> u64 {
        match self.entries.get(id) {
            Some(e) if e.busy && e.class() == Class::Allocation => {
                e.need.unwrap_or(0).saturating_sub(e.current)
            }
            _ => 0,
        }
    }

    fn lend(&mut self, lender: &str, borrower: &str, bytes: u64) {
        if bytes == 0 || lender == borrower {
            return;
        }
        if let Some(e) = self.entries.get_mut(lender) {
            e.current -= bytes;
        }
        if let Some(e) = self.entries.get_mut(borrower) {
            e.current += bytes;
        }
        match self
            .loans
            .iter_mut()
            .find(|l| l.lender == lender && l.borrower == borrower)
        {
            Some(l) => l.bytes += bytes,
            None => self.loans.push(Loan {
                lender: lender.to_string(),
                borrower: borrower.to_string(),
                bytes,
            }),
        }
    }

    /// Borrows `id`'s deficit from lenders, largest surplus first.
    fn borrow(&mut self, id: &str, usage: Usage<'_>) {
        let mut need = self.deficit(id);
        if need == 0 {
            return;
        }
        let Some(me) = self.entries.get(id) else {
            return;
        };
        let mut lenders: Vec<(u64, String)> = self
            .entries
            .iter()
            .filter(|(k, e)| k.as_str() != id && self.in_scope(me, e))
            .map(|(k, _)| (self.surplus(k, usage), k.clone()))
            .filter(|(s, _)| *s > 0)
            .collect();
        lenders.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (s, lender) in lenders {
            if need == 0 {
                break;
            }
            let take = s.min(need);
            self.lend(&lender, id, take);
            need -= take;
        }
    }

    /// A lender that just started serves waiting deficits `0 < D ≤ S`,
    /// smallest first.
    fn serve_waiting(&mut self, lender: &str, usage: Usage<'_>) {
        let Some(me) = self.entries.get(lender) else {
            return;
        };
        let mut waiting: Vec<(u64, String)> = self
            .entries
            .iter()
            .filter(|(k, e)| k.as_str() != lender && self.in_scope(me, e))
            .map(|(k, _)| (self.deficit(k), k.clone()))
            .filter(|(d, _)| *d > 0)
            .collect();
        waiting.sort();
        for (d, borrower) in waiting {
            if d <= self.surplus(lender, usage) {
                self.lend(lender, &borrower, d);
            }
        }
    }

    /// Undoes every loan matching `which`; returns the borrowers that lost
    /// memory.
    fn rollback(&mut self, which: impl Fn(&Loan) -> bool) -> Vec<String> {
        let (undo, keep): (Vec<Loan>, Vec<Loan>) = self.loans.drain(..).partition(|l| which(l));
        self.loans = keep;
        let mut hurt = Vec::new();
        for l in undo {
            if let Some(e) = self.entries.get_mut(&l.lender) {
                e.current += l.bytes;
            }
            if let Some(e) = self.entries.get_mut(&l.borrower) {
                e.current -= l.bytes;
            }
            if !hurt.contains(&l.borrower) {
                hurt.push(l.borrower);
            }
        }
        hurt
    }

    fn reborrow(&mut self, hurt: Vec<String>, usage: Usage<'_>) {
        for b in hurt {
            self.borrow(&b, usage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ephemera_sys::rng::Rng;

    const MB: u64 = 1 << 20;

    fn member(function: &str, initial: u64, u: u64, f: u64) -> Member {
        Member {
            function: function.into(),
            workflow: String::new(),
            initial,
            profile: Some(Profile { u_max: u, f_max: f }),
        }
    }

    fn no_usage(_: &str) -> Option<u64> {
        None
    }

    #[test]
    fn cpu_lends_to_io_and_everything_returns() {
        let mut p = Pool::new(SharingScope::Tenant);
        p.init("cpu", member("cpu", 300 * MB, 10 * MB, 0));
        p.init("io", member("io", 150 * MB, 10 * MB, 240 * MB));
        assert_eq!(p.entries["cpu"].class(), Class::Harvest);
        assert_eq!(p.entries["io"].class(), Class::Allocation);
        assert!(p.invoke("cpu", &no_usage).is_empty(), "nobody waits yet");
        let ch = p.invoke("io", &no_usage);
        assert_eq!(ch.len(), 2);
        let need = pad(10 * MB) + pad(240 * MB);
        assert_eq!(p.entries["io"].current, need);
        assert_eq!(p.entries["cpu"].current, 300 * MB - (need - 150 * MB));
        assert_eq!(p.total_current(), p.total_initial());
        let ch = p.result("io", &no_usage);
        assert_eq!(ch.len(), 2);
        assert_eq!(p.entries["io"].current, 150 * MB);
        assert_eq!(p.entries["cpu"].current, 300 * MB);
        assert!(p.loans.is_empty());
    }

    #[test]
    fn waiting_borrower_is_served_by_a_later_lender_and_safeguard_takes_it_back() {
        let mut p = Pool::new(SharingScope::Tenant);
        p.init("io", member("io", 100 * MB, 0, 120 * MB));
        p.init("cpu", member("cpu", 300 * MB, 10 * MB, 0));
        assert!(p.invoke("io", &no_usage).is_empty(), "no lender is running");
        let ch = p.invoke("cpu", &no_usage);
        assert_eq!(ch.len(), 2);
        assert_eq!(p.entries["io"].current, pad(120 * MB));
        let ch = p.safeguard("cpu", &no_usage);
        assert_eq!(ch.len(), 2);
        assert_eq!(p.entries["io"].current, 100 * MB);
        assert!(!p.entries["cpu"].harvestable);
        assert!(p.invoke("io", &no_usage).is_empty());
    }

    #[test]
    fn lenders_keep_headroom_above_their_usage() {
        let mut p = Pool::new(SharingScope::Tenant);
        p.init("cpu", member("cpu", 100 * MB, 10 * MB, 0));
        p.init("io", member("io", 100 * MB, 0, 500 * MB));
        p.invoke("cpu", &no_usage);
        let usage = |id: &str| (id == "cpu").then_some(80 * MB);
        p.invoke("io", &usage);
        assert_eq!(p.entries["cpu"].current, 90 * MB);
        assert_eq!(p.entries["io"].current, 110 * MB);
    }

    #[test]
    fn the_actor_reads_only_lenders_usage_and_a_restart_rolls_everything_back() {
        let mut p = Pool::new(SharingScope::Tenant);
        p.init("cpu", member("cpu", 300 * MB, 10 * MB, 0));
        p.init("io", member("io", 150 * MB, 10 * MB, 240 * MB));
        let wanted = |p: &Pool, id: &str| p.usage_wanted(id).map(String::from).collect::<Vec<_>>();
        assert_eq!(wanted(&p, "io"), ["io"], "nobody may lend yet");
        p.invoke("cpu", &no_usage);
        assert_eq!(wanted(&p, "io"), ["cpu", "io"]);
        p.invoke("io", &no_usage);
        assert_eq!(p.loaned(), pad(10 * MB) + pad(240 * MB) - 150 * MB);
        assert_eq!(p.limit("io"), Some(pad(10 * MB) + pad(240 * MB)));
        assert!(p.lends_or_may_lend("cpu"));
        p.safeguard("cpu", &no_usage);
        assert!(!p.lends_or_may_lend("cpu"), "safeguarded and paid back");
        p.invoke("cpu", &no_usage);
        assert_eq!(
            wanted(&p, "io"),
            ["io"],
            "a safeguarded instance lends no more"
        );
        let mut restarted = p.clone();
        restarted.restart(SharingScope::None);
        assert!(restarted.is_empty() && restarted.loan_count() == 0);
        assert_eq!(restarted, Pool::new(SharingScope::None));
    }

    #[test]
    fn scopes_restrict_peers() {
        for (scope, shares) in [
            (SharingScope::None, false),
            (SharingScope::Function, false),
            (SharingScope::Workflow, false),
            (SharingScope::Tenant, true),
        ] {
            let mut p = Pool::new(scope);
            p.init("cpu", member("cpu", 300 * MB, 10 * MB, 0));
            p.init("io", member("io", 150 * MB, 10 * MB, 240 * MB));
            p.invoke("cpu", &no_usage);
            p.invoke("io", &no_usage);
            assert_eq!(!p.loans.is_empty(), shares, "{scope:?}");
        }
    }

    /// Random event sequences over several tenants' pools: the invariant holds
    /// after every event, loans stay inside a tenant, a restart (ledger round
    /// trip) changes nothing, and idle means every limit is back.
    #[test]
    fn property_random_events_keep_every_tenant_whole() {
        for seed in 0..300u64 {
            let mut rng = Rng::new(seed);
            let scope = rng.pick(&[
                SharingScope::Tenant,
                SharingScope::Function,
                SharingScope::Workflow,
                SharingScope::None,
            ]);
            let mut pools: Vec<Pool> = (0..3).map(|_| Pool::new(scope)).collect();
            let mut next = 0u32;
            for _step in 0..200 {
                let t = rng.below(pools.len() as u64) as usize;
                let pool = &mut pools[t];
                let ids: Vec<String> = pool.entries.keys().cloned().collect();
                let pick = |rng: &mut Rng| ids.get(rng.below(ids.len() as u64) as usize).cloned();
                let usage_seed = rng.next_u64();
                let usage = move |id: &str| {
                    let h = id
                        .bytes()
                        .fold(usage_seed, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
                    (h % 3 == 0).then_some((h % 200) * MB)
                };
                match rng.below(10) {
                    0 | 1 => {
                        next += 1;
                        let id = format!("t{t}-i{next}");
                        let f = rng.below(3);
                        let m = Member {
                            function: format!("f{f}"),
                            workflow: if f < 2 { "w".into() } else { String::new() },
                            initial: (16 + rng.below(496)) * MB,
                            profile: rng.chance(80).then(|| Profile {
                                u_max: rng.below(256) * MB,
                                f_max: rng.below(512) * MB,
                            }),
                        };
                        pool.init(&id, m);
                    }
                    2..=4 => {
                        if let Some(id) = pick(&mut rng) {
                            pool.invoke(&id, &usage);
                        }
                    }
                    5..=6 => {
                        if let Some(id) = pick(&mut rng) {
                            pool.result(&id, &usage);
                        }
                    }
                    7 => {
                        if let Some(id) = pick(&mut rng) {
                            pool.safeguard(&id, &usage);
                        }
                    }
                    8 => {
                        if let Some(id) = pick(&mut rng) {
                            pool.terminate(&id, &usage);
                        }
                    }
                    _ => {
                        let text = crate::ledger::encode(pool);
                        let back = crate::ledger::decode(&text).expect("ledger round trip");
                        assert_eq!(&back, pool, "seed {seed}: restart changed the pool");
                    }
                }
                for (ti, p) in pools.iter().enumerate() {
                    assert_eq!(
                        p.total_current(),
                        p.total_initial(),
                        "seed {seed} tenant {ti}"
                    );
                    for l in &p.loans {
                        assert!(l.bytes > 0);
                        assert!(
                            p.entries.contains_key(&l.lender),
                            "seed {seed}: dangling lender"
                        );
                        assert!(
                            p.entries.contains_key(&l.borrower),
                            "seed {seed}: dangling borrower"
                        );
                        assert!(
                            l.lender.starts_with(&format!("t{ti}-")),
                            "cross-tenant loan"
                        );
                        assert!(
                            l.borrower.starts_with(&format!("t{ti}-")),
                            "cross-tenant loan"
                        );
                        assert!(p.entries[&l.lender].busy && p.entries[&l.borrower].busy);
                    }
                    for (id, e) in &p.entries {
                        assert_eq!(
                            e.current + p.lent(id),
                            e.initial + p.borrowed(id),
                            "seed {seed}: ledger of {id} does not balance"
                        );
                    }
                }
            }
            // Drain: every queue ends; the node goes idle.
            for pool in &mut pools {
                let ids: Vec<String> = pool.entries.keys().cloned().collect();
                for id in ids {
                    pool.result(&id, &no_usage);
                }
                assert!(pool.loans.is_empty(), "seed {seed}: loans left when idle");
                for e in pool.entries.values() {
                    assert_eq!(
                        e.current, e.initial,
                        "seed {seed}: limit not back when idle"
                    );
                }
            }
        }
    }
}
