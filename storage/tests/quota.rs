//! Per-tenant quotas: a tenant cannot hold more invocations or memory than
//! its quota, another tenant is not affected, and every way a placement
//! ends gives its share back.

use ephemera_storage::{ClusterState, Command, Policy, Quota, Response};

const MIB: u64 = 1 << 20;

fn schedule(s: &mut ClusterState, tenant: &str, id: &str, t_lim: u64) -> Response {
    s.apply(&Command::Schedule {
        invocation_id: id.into(),
        tenant: tenant.into(),
        function: "f".into(),
        t_lim,
        t_mem: 0,
        policy: Policy::MostFree,
    })
}

#[test]
fn quotas_bound_each_tenant_and_come_back() {
    let mut s = ClusterState::default();
    for node in ["n1", "n2"] {
        s.apply(&Command::RegisterNode {
            node_id: node.into(),
            addr: format!("{node}:1"),
            memory_bytes: 4096 * MIB,
        });
    }
    let r = s.apply(&Command::SetTenantQuota {
        tenant: "small".into(),
        quota: Quota {
            memory_bytes: 300 * MIB,
            invocations: 2,
        },
    });
    assert_eq!(r, Response::Ok);

    assert!(matches!(
        schedule(&mut s, "small", "a", 100 * MIB),
        Response::Placed { .. }
    ));
    assert!(matches!(
        schedule(&mut s, "small", "b", 100 * MIB),
        Response::Placed { .. }
    ));
    let Response::OverQuota { reason } = schedule(&mut s, "small", "c", 10 * MIB) else {
        panic!("a third concurrent invocation is over the quota")
    };
    assert!(
        reason.contains("tenant small is at its quota (300 MiB in 2 invocations)")
            && reason.contains("holds 200 MiB in 2 invocations"),
        "{reason}"
    );
    // Another tenant is not held back by it.
    assert!(matches!(
        schedule(&mut s, "big", "x", 1000 * MIB),
        Response::Placed { .. }
    ));
    assert_eq!(s.usage("small").invocations, 2);
    assert_eq!(s.usage("big").memory_bytes, 1000 * MIB);

    // Completing one frees a slot; memory is the bound now.
    s.apply(&Command::Complete {
        invocation_id: "a".into(),
    });
    assert!(matches!(
        schedule(&mut s, "small", "d", 250 * MIB),
        Response::OverQuota { .. }
    ));
    assert!(matches!(
        schedule(&mut s, "small", "e", 200 * MIB),
        Response::Placed { .. }
    ));
    assert_eq!(s.usage("small").memory_bytes, 300 * MIB);

    // A node going down releases its tasks, and their share of the quota.
    let node_of_e = s.tasks["e"].node_id.clone();
    s.apply(&Command::SetNodeUp {
        node_id: node_of_e,
        up: false,
    });
    assert!(s.usage("small").invocations < 2);
    s.check_invariants().unwrap();

    // Survives a snapshot round trip (the usage is rebuilt, not stored).
    let back: ClusterState = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.quota("small").invocations, 2);
    assert_eq!(back.quota("nobody"), Quota::DEFAULT);
}
