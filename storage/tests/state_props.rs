//! Property-style tests of `ClusterState::apply`: random command sequences (fixed seeds) keep
//! every invariant after every command, never exceed a node's capacity, refuse without change,
//! are idempotent by invocation id, and are deterministic across replicas.

use ephemera_storage::{
    ClusterState, Command, FunctionRecord, Policy, Profile, Quota, Response, MAX_MEMORY_BYTES,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MIB: u64 = 1 << 20;

fn deploy(tenant: &str, name: &str, mib: u64) -> Command {
    Command::DeployFunction {
        function: FunctionRecord {
            tenant: tenant.into(),
            name: name.into(),
            memory_bytes: mib * MIB,
            ..FunctionRecord::default()
        },
    }
}

fn schedule(id: &str, function: &str, t_lim: u64, t_mem: u64, policy: Policy) -> Command {
    Command::Schedule {
        invocation_id: id.into(),
        tenant: "t".into(),
        function: function.into(),
        t_lim,
        t_mem,
        policy,
    }
}

fn random_command(rng: &mut StdRng, next_id: &mut u64) -> Command {
    let node = |rng: &mut StdRng| format!("n{}", rng.gen_range(0..6));
    let inv = |rng: &mut StdRng, next: u64| format!("i{}", rng.gen_range(0..next.max(1)));
    match rng.gen_range(0..100) {
        0..=4 => Command::RegisterNode {
            node_id: node(rng),
            addr: format!("10.0.0.{}:7000", rng.gen_range(1..9)),
            memory_bytes: [0, 256, 512, 1024, 4096][rng.gen_range(0..5)] * MIB,
        },
        5..=8 => Command::SetNodeUp {
            node_id: node(rng),
            up: rng.gen_bool(0.6),
        },
        9..=10 => deploy(
            "t",
            &format!("f{}", rng.gen_range(0..4)),
            rng.gen_range(0..600),
        ),
        11..=12 => Command::SetProfile {
            tenant: "t".into(),
            name: format!("f{}", rng.gen_range(0..5)),
            profile: Profile {
                u_max: rng.gen_range(0..300) * MIB,
                f_max: rng.gen_range(0..300) * MIB,
                measured: true,
            },
        },
        13..=62 => {
            // Mostly fresh ids, sometimes a retry of an old one.
            let id = if rng.gen_bool(0.8) {
                *next_id += 1;
                format!("i{}", *next_id - 1)
            } else {
                inv(rng, *next_id)
            };
            let t_lim = if rng.gen_bool(0.02) {
                [0, MAX_MEMORY_BYTES + 1][rng.gen_range(0..2)]
            } else {
                rng.gen_range(1..400) * MIB
            };
            schedule(
                &id,
                &format!("f{}", rng.gen_range(0..5)),
                t_lim,
                rng.gen_range(0..600) * MIB,
                Policy::ALL[rng.gen_range(0..3)],
            )
        }
        63 => Command::SetTenantQuota {
            tenant: "t".into(),
            quota: Quota {
                // Sometimes tight (refusals), mostly roomy (placements).
                memory_bytes: if rng.gen_bool(0.1) { 512 } else { 65536 } * MIB,
                invocations: if rng.gen_bool(0.1) { 3 } else { 500 },
            },
        },
        64..=65 => Command::Batch {
            commands: (0..rng.gen_range(0..5))
                .map(|_| random_command(rng, next_id))
                .collect(),
        },
        _ => Command::Complete {
            invocation_id: inv(rng, *next_id),
        },
    }
}

fn run(seed: u64, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut s = ClusterState::default();
    let mut replica = ClusterState::default();
    let mut next_id = 0;
    let (mut placed, mut rejected) = (0, 0);
    for step in 0..steps {
        let cmd = random_command(&mut rng, &mut next_id);
        let before = s.clone();
        let r = s.apply(&cmd);
        let ctx = || format!("seed {seed} step {step}: {cmd:?} -> {r:?}");
        s.check_invariants()
            .unwrap_or_else(|e| panic!("{}: {e}", ctx()));
        for n in s.nodes.values() {
            assert!(n.n_alloc <= n.n_lim, "{}: node {n:?} over capacity", ctx());
        }
        // The packed index chooses exactly what the reference scan over the nodes chooses.
        let (t_lim, t_mem) = (rng.gen_range(1..500) * MIB, rng.gen_range(0..600) * MIB);
        for p in Policy::ALL {
            assert_eq!(
                s.place(p, t_lim, t_mem).map(|n| &n.node_id),
                p.place(s.nodes.values().rev(), t_lim, t_mem)
                    .map(|n| &n.node_id),
                "{}: {p}",
                ctx()
            );
        }
        // Every replica applying the same command gets the same answer and state.
        assert_eq!(replica.apply(&cmd), r, "{}", ctx());
        assert_eq!(replica, s, "{}", ctx());
        match &r {
            Response::Rejected { reason } | Response::OverQuota { reason } => {
                rejected += 1;
                assert!(!reason.is_empty());
                assert_eq!(s, before, "{}: a refusal changed the state", ctx());
                if let Response::OverQuota { .. } = &r {
                    let (used, quota) = (s.usage("t"), s.quota("t"));
                    let Command::Schedule { t_lim, .. } = &cmd else {
                        panic!("{}: only Schedule answers OverQuota", ctx())
                    };
                    assert!(
                        used.invocations >= quota.invocations
                            || used.memory_bytes + t_lim > quota.memory_bytes,
                        "{}: refused under quota ({used:?} of {quota:?})",
                        ctx()
                    );
                }
            }
            Response::Placed { node_id, addr } => {
                placed += 1;
                let Command::Schedule { invocation_id, .. } = &cmd else {
                    panic!("{}", ctx())
                };
                let node = &s.nodes[node_id];
                assert!(node.up && node.addr == *addr && node.tasks.contains(invocation_id));
                let (used, quota) = (s.usage("t"), s.quota("t"));
                assert!(
                    before.tasks.contains_key(invocation_id)
                        || (used.invocations <= quota.invocations
                            && used.memory_bytes <= quota.memory_bytes),
                    "{}: placed over quota ({used:?} of {quota:?})",
                    ctx()
                );
                // A retried Schedule returns the same placement and changes nothing.
                let after = s.clone();
                assert_eq!(s.apply(&cmd), r, "{}", ctx());
                assert_eq!(s, after, "{}", ctx());
                replica.apply(&cmd);
            }
            Response::Batch { responses } => {
                let Command::Batch { commands } = &cmd else {
                    panic!("{}", ctx())
                };
                assert_eq!(responses.len(), commands.len(), "{}", ctx());
            }
            Response::Ok => {
                if let Command::Complete { invocation_id } = &cmd {
                    assert!(!s.tasks.contains_key(invocation_id));
                    let after = s.clone();
                    assert_eq!(s.apply(&cmd), Response::Ok);
                    assert_eq!(s, after, "{}: a repeated Complete changed the state", ctx());
                    replica.apply(&cmd);
                }
            }
        }
    }
    assert!(
        placed > steps / 10 && rejected > 0,
        "seed {seed}: {placed} placed, {rejected} rejected"
    );
    // The state survives serialization unchanged (snapshots rely on it).
    let json = serde_json::to_vec(&s).unwrap();
    let back: ClusterState = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, s);
    back.check_invariants().unwrap();
}

#[test]
fn random_sequences_keep_invariants() {
    for seed in 0..12 {
        run(seed, 3_000);
    }
}

fn cluster() -> ClusterState {
    let mut s = ClusterState::default();
    for (node, mib) in [("n1", 1024), ("n2", 1024)] {
        let r = s.apply(&Command::RegisterNode {
            node_id: node.into(),
            addr: format!("{node}:1"),
            memory_bytes: mib * MIB,
        });
        assert_eq!(r, Response::Ok);
    }
    assert_eq!(s.apply(&deploy("t", "f", 100)), Response::Ok);
    s
}

#[test]
fn schedule_is_idempotent_by_invocation_id() {
    let mut s = cluster();
    let cmd = schedule("a", "f", 100 * MIB, 50 * MIB, Policy::FeatureAware);
    let first = s.apply(&cmd);
    assert!(matches!(first, Response::Placed { .. }));
    let snapshot = s.clone();
    assert_eq!(s.apply(&cmd), first);
    assert_eq!(s, snapshot);

    // The same id for another function is refused, not re-placed.
    assert_eq!(s.apply(&deploy("t", "g", 100)), Response::Ok);
    let other = schedule("a", "g", 100 * MIB, 50 * MIB, Policy::FeatureAware);
    assert!(matches!(s.apply(&other), Response::Rejected { .. }));

    assert_eq!(
        s.apply(&Command::Complete {
            invocation_id: "a".into()
        }),
        Response::Ok
    );
    assert_eq!(
        s.nodes.values().map(|n| n.n_alloc + n.n_req).sum::<u64>(),
        0
    );
    let done = s.clone();
    assert_eq!(
        s.apply(&Command::Complete {
            invocation_id: "a".into()
        }),
        Response::Ok
    );
    match s.apply(&cmd) {
        Response::Rejected { reason } => assert!(reason.contains("already completed"), "{reason}"),
        r => panic!("retry after completion: {r:?}"),
    }
    assert_eq!(s, done);
    s.check_invariants().unwrap();
}

#[test]
fn complete_of_unknown_id_is_ok_and_blocks_a_late_schedule() {
    let mut s = cluster();
    assert_eq!(
        s.apply(&Command::Complete {
            invocation_id: "late".into()
        }),
        Response::Ok
    );
    let r = s.apply(&schedule("late", "f", 100 * MIB, 0, Policy::MostFree));
    assert!(matches!(r, Response::Rejected { .. }), "{r:?}");
    assert!(s.tasks.is_empty());
}

#[test]
fn node_down_releases_its_tasks_and_a_retry_is_placed_again() {
    let mut s = cluster();
    let cmd = schedule("a", "f", 100 * MIB, 50 * MIB, Policy::MostFree);
    let Response::Placed { node_id, .. } = s.apply(&cmd) else {
        panic!()
    };
    assert_eq!(node_id, "n1");
    s.apply(&Command::SetNodeUp {
        node_id: "n1".into(),
        up: false,
    });
    let n1 = &s.nodes["n1"];
    assert!(n1.tasks.is_empty() && n1.n_alloc == 0 && n1.n_req == 0 && !n1.up);
    assert!(s.tasks.is_empty());
    s.check_invariants().unwrap();
    let Response::Placed { node_id, .. } = s.apply(&cmd) else {
        panic!()
    };
    assert_eq!(node_id, "n2");
    // Re-registering brings n1 back up, empty.
    s.apply(&Command::RegisterNode {
        node_id: "n1".into(),
        addr: "n1:2".into(),
        memory_bytes: 1024 * MIB,
    });
    assert!(s.nodes["n1"].up);
    s.check_invariants().unwrap();
}

#[test]
fn bad_input_is_refused_with_its_name() {
    let mut s = cluster();
    let before = s.clone();
    let reason = |r: Response| match r {
        Response::Rejected { reason } => reason,
        r => panic!("expected a refusal, got {r:?}"),
    };
    let r = reason(s.apply(&Command::SetNodeUp {
        node_id: "node-9".into(),
        up: true,
    }));
    assert_eq!(r, "unknown node node-9");
    let r = reason(s.apply(&Command::SetProfile {
        tenant: "t".into(),
        name: "nope".into(),
        profile: Profile::default(),
    }));
    assert_eq!(r, "function t/nope does not exist");
    let r = reason(s.apply(&schedule("x", "f", 0, MIB, Policy::Pairing)));
    assert!(r.contains("x") && r.contains("t/f"), "{r}");
    let r = reason(s.apply(&schedule("x", "f", u64::MAX, MIB, Policy::Pairing)));
    assert!(r.contains("t/f"), "{r}");
    let r = reason(s.apply(&deploy("t", "z", 0)));
    assert!(r.contains("t/z"), "{r}");
    let r = reason(s.apply(&deploy("a/b", "z", 1)));
    assert!(r.contains("a/b"), "{r}");
    let r = reason(s.apply(&Command::RegisterNode {
        node_id: "n3".into(),
        addr: "n3:1".into(),
        memory_bytes: 0,
    }));
    assert!(r.contains("n3"), "{r}");
    let r = reason(s.apply(&Command::SetProfile {
        tenant: "t".into(),
        name: "f".into(),
        profile: Profile {
            u_max: u64::MAX,
            f_max: 1,
            measured: true,
        },
    }));
    assert!(r.contains("t/f"), "{r}");
    assert_eq!(s, before);
}

#[test]
fn shrinking_a_node_below_its_allocation_is_refused() {
    let mut s = cluster();
    s.apply(&schedule("a", "f", 600 * MIB, 0, Policy::MostFree));
    let r = s.apply(&Command::RegisterNode {
        node_id: "n1".into(),
        addr: "n1:1".into(),
        memory_bytes: 512 * MIB,
    });
    assert!(matches!(r, Response::Rejected { .. }), "{r:?}");
    assert_eq!(s.nodes["n1"].n_lim, 1024 * MIB);
}

#[test]
fn t_mem_is_the_profile_once_measured() {
    let mut f = FunctionRecord {
        memory_bytes: 300,
        ..FunctionRecord::default()
    };
    assert_eq!(f.t_mem(), 300);
    f.profile = Profile {
        u_max: 4,
        f_max: 256,
        measured: true,
    };
    assert_eq!(f.t_mem(), 260);
    f.tenant = "t".into();
    f.name = "n".into();
    assert_eq!(f.key(), "t/n");
}

#[test]
fn a_batch_answers_like_its_commands_applied_one_by_one() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut next_id = 0;
    let mut batched = cluster();
    let mut single = cluster();
    for _ in 0..200 {
        let commands: Vec<Command> = (0..rng.gen_range(0..20))
            .map(|_| random_command(&mut rng, &mut next_id))
            .collect();
        let expected: Vec<Response> = commands
            .iter()
            .map(|c| match c {
                Command::Batch { .. } => batched_nested(&mut single, c),
                c => single.apply(c),
            })
            .collect();
        let r = batched.apply(&Command::Batch { commands });
        assert_eq!(
            r,
            Response::Batch {
                responses: expected
            }
        );
        assert_eq!(batched, single);
        batched.check_invariants().unwrap();
    }
}

/// What a batch answers for a nested batch: a refusal, nothing applied.
fn batched_nested(_s: &mut ClusterState, c: &Command) -> Response {
    let Command::Batch { commands } = c else {
        unreachable!()
    };
    Response::Rejected {
        reason: format!("nested batch of {} commands is not allowed", commands.len()),
    }
}

#[test]
fn code_bytes_travel_as_base64() {
    let f = FunctionRecord {
        tenant: "t".into(),
        name: "f".into(),
        memory_bytes: MIB,
        code: vec![ephemera_storage::CodeFileRecord {
            path: "main.py".into(),
            mode: 0o755,
            data: b"print(1)\n".to_vec(),
        }],
        ..FunctionRecord::default()
    };
    let json = serde_json::to_string(&Command::DeployFunction {
        function: f.clone(),
    })
    .unwrap();
    assert!(json.contains("\"cHJpbnQoMSkK\""), "{json}");
    let back: Command = serde_json::from_str(&json).unwrap();
    assert_eq!(
        back,
        Command::DeployFunction {
            function: f.clone()
        }
    );
    assert_eq!(f.code_size(), 9);
}
