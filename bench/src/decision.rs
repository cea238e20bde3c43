//! The tenant actor's decision time per memory event (thesis §5.5): pure
//! [`Pool`] code, no I/O, so it is meaningful only in a release build.

use ephemera_node_agent::pool::{Member, Pool, Profile};
use ephemera_node_agent::SharingScope;
use serde::Serialize;

/// Decision time of the tenant actor's pool.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionTime {
    /// Concurrent instances of the tenant.
    pub instances: usize,
    /// Mean time per event (ns).
    pub ns_per_event: f64,
}

/// Mean time of one pool decision (an `Invoke` or a `Result`) with
/// `instances` instances of one tenant, half lenders and half borrowers, all
/// running: the thesis's "decision time per event" (§5.5).
pub fn decision_time(instances: usize, rounds: usize) -> std::time::Duration {
    const MB: u64 = 1 << 20;
    let mut pool = Pool::new(SharingScope::Tenant);
    let ids: Vec<String> = (0..instances.max(1)).map(|i| format!("i{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let (initial, u, f) = if i % 2 == 0 {
            (300 * MB, 10 * MB, 0)
        } else {
            (150 * MB, 10 * MB, 240 * MB)
        };
        pool.init(
            id,
            Member {
                function: format!("f{}", i % 2),
                workflow: String::new(),
                initial,
                profile: Some(Profile { u_max: u, f_max: f }),
            },
        );
    }
    let none = |_: &str| None;
    // Everyone but the last runs; the last one comes and goes.
    for id in &ids[..ids.len() - 1] {
        pool.invoke(id, &none);
    }
    let last = &ids[ids.len() - 1];
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(pool.invoke(last, &none));
        std::hint::black_box(pool.result(last, &none));
    }
    start.elapsed() / (2 * rounds.max(1)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_time_is_measured() {
        for n in [1, 10] {
            let t = decision_time(n, 2000);
            eprintln!("pool decision time with {n} instances: {t:?} per event");
            // A loose bound for unoptimised test builds on a shared machine.
            assert!(t < std::time::Duration::from_millis(1), "{n}: {t:?}");
        }
    }
}
