//! The pool's rules, event by event, and a property test over random
//! event sequences of several tenants (with ledger round trips).

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
