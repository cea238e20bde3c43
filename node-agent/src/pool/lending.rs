//! How the pool's events move memory: who may lend how much (surplus),
//! who lacks how much (deficit), loans made and undone on both sides of the
//! ledger, and which limits changed. Private to the pool: its public events
//! are the only way in.

use super::{Change, Class, Entry, Loan, Pool, Usage};
use crate::config::SharingScope;

impl Pool {
    pub(super) fn tracked(&mut self, f: impl FnOnce(&mut Pool)) -> Vec<Change> {
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

    /// `id`'s peers in its sharing scope for which `amount` (a surplus or a
    /// deficit) is not zero, as `(amount, peer)`.
    fn peers(&self, id: &str, amount: impl Fn(&str) -> u64) -> Vec<(u64, String)> {
        let Some(me) = self.entries.get(id) else {
            return Vec::new();
        };
        self.entries
            .iter()
            .filter(|(k, e)| k.as_str() != id && self.in_scope(me, e))
            .map(|(k, _)| (amount(k), k.clone()))
            .filter(|(a, _)| *a > 0)
            .collect()
    }

    /// Borrows `id`'s deficit from lenders, largest surplus first.
    pub(super) fn borrow(&mut self, id: &str, usage: Usage<'_>) {
        let mut need = self.deficit(id);
        if need == 0 {
            return;
        }
        let mut lenders = self.peers(id, |k| self.surplus(k, usage));
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
    pub(super) fn serve_waiting(&mut self, lender: &str, usage: Usage<'_>) {
        let mut waiting = self.peers(lender, |k| self.deficit(k));
        waiting.sort();
        for (d, borrower) in waiting {
            if d <= self.surplus(lender, usage) {
                self.lend(lender, &borrower, d);
            }
        }
    }

    /// Undoes every loan matching `which`; returns the borrowers that lost
    /// memory.
    pub(super) fn rollback(&mut self, which: impl Fn(&Loan) -> bool) -> Vec<String> {
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

    pub(super) fn reborrow(&mut self, hurt: Vec<String>, usage: Usage<'_>) {
        for b in hurt {
            self.borrow(&b, usage);
        }
    }
}
