//! The seccomp filter: a deny list of what no function needs, compiled with
//! `seccompiler` before the fork, installed last in the child.
//!
//! Everything not listed is allowed: the filter is defence in depth for a
//! process that already runs without capabilities under its own uid. What it
//! removes is kernel attack surface an unprivileged process can still reach
//! (user namespaces, `bpf`, `userfaultfd`, `io_uring`, `perf_event_open`,
//! keyrings, the mount API inside a user namespace) and calls that would only
//! matter if a privilege check were ever bypassed (mount, module loading,
//! kexec, clock setting, swap, reboot). Denied calls return `EPERM`, so a
//! program that probes for a feature sees "not permitted" and carries on.
//!
//! Three cases need more than a number:
//! - `unshare` and `clone` are denied only when a namespace flag is set:
//!   the intercept library's adapter thread calls `unshare(CLONE_FILES)`, and
//!   `fork`/threads go through `clone` (the flags are argument 0 on x86_64 and
//!   aarch64).
//! - `clone3` passes its flags in memory that seccomp cannot read, so it gets
//!   `ENOSYS`, which makes glibc fall back to `clone` (what Docker and systemd
//!   do); `EPERM` would make `pthread_create` fail.
//! - On x86_64 the x32 ABI reaches the same kernel entry points with bit 30
//!   set in the syscall number, past any rule keyed on the x86_64 number.
//!   seccompiler checks only the architecture, so a hand-written prefix
//!   refuses every x32 number (whether or not the kernel enables x32).

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

use crate::error::SandboxError;

/// `CLONE_NEWTIME`: only valid for `unshare`/`clone3` (for `clone` the bit is
/// part of the exit signal).
const CLONE_NEWTIME: u64 = 0x80;

/// Namespace flags of `clone` (argument 0).
const CLONE_NS_FLAGS: [(&str, u64); 7] = [
    ("CLONE_NEWNS", libc::CLONE_NEWNS as u64),
    ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP as u64),
    ("CLONE_NEWUTS", libc::CLONE_NEWUTS as u64),
    ("CLONE_NEWIPC", libc::CLONE_NEWIPC as u64),
    ("CLONE_NEWUSER", libc::CLONE_NEWUSER as u64),
    ("CLONE_NEWPID", libc::CLONE_NEWPID as u64),
    ("CLONE_NEWNET", libc::CLONE_NEWNET as u64),
];

/// Syscalls denied outright (`EPERM`), with their numbers on this
/// architecture. Grouped as: mounts and roots; other processes' memory and
/// fds; kernel code; kernel attack surface; namespaces; machine state.
pub const DENIED: &[(&str, i64)] = &[
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("setns", libc::SYS_setns),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("reboot", libc::SYS_reboot),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
];

/// What the filter does, for [`crate::Applied`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompReport {
    /// Whether a filter is installed at all.
    pub enabled: bool,
    /// Syscalls denied with `EPERM` whatever their arguments.
    pub denied: Vec<&'static str>,
    /// `unshare`/`clone` flags that make the call fail with `EPERM`.
    pub denied_namespace_flags: Vec<&'static str>,
    /// `clone3` answers `ENOSYS` (glibc falls back to `clone`).
    pub clone3_enosys: bool,
    /// x32 syscall numbers are refused (x86_64 only).
    pub x32_refused: bool,
    /// Instructions in the program.
    pub instructions: usize,
}

impl SeccompReport {
    /// The report when the policy turned seccomp off.
    pub(crate) fn disabled() -> SeccompReport {
        SeccompReport {
            enabled: false,
            denied: Vec::new(),
            denied_namespace_flags: Vec::new(),
            clone3_enosys: false,
            x32_refused: false,
            instructions: 0,
        }
    }
}

/// `AUDIT_ARCH_X86_64`: `EM_X86_64` | 64-bit | little endian (linux/audit.h).
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// `AUDIT_ARCH_AARCH64`: `EM_AARCH64` | 64-bit | little endian.
const AUDIT_ARCH_AARCH64: u32 = 183 | 0x8000_0000 | 0x4000_0000;

/// `ERRNO` return value of a BPF program.
const fn ret_errno(errno: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// `AUDIT_ARCH_*` of this build.
fn audit_arch() -> Option<u32> {
    match std::env::consts::ARCH {
        "x86_64" => Some(AUDIT_ARCH_X86_64),
        "aarch64" => Some(AUDIT_ARCH_AARCH64),
        _ => None,
    }
}

/// The hand-written prefix: `clone3` → `ENOSYS`, x32 numbers → `EPERM`,
/// everything else (including a foreign architecture, which seccompiler's
/// own check then kills) falls through to the compiled program that follows.
fn prefix(arch: u32) -> Vec<libc::sock_filter> {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    const ARCH_OFFSET: u32 = 4;
    const NR_OFFSET: u32 = 0;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let x86 = arch == AUDIT_ARCH_X86_64;
    // Layout (pc: instruction), jumps are relative to pc + 1:
    // 0: ld arch
    // 1: jeq native ? 2 : END
    // 2: ld nr
    // [3: jge X32_BIT ? EPERM : 4]   (x86_64 only)
    // c: jeq clone3 ? ENOSYS : END
    // e: ret EPERM
    // n: ret ENOSYS
    // END: the compiled program
    let len = if x86 { 7 } else { 6 };
    let end = len as u8;
    let mut p = vec![
        stmt(BPF_LD | BPF_W | BPF_ABS, ARCH_OFFSET),
        jump(BPF_JMP | BPF_JEQ | BPF_K, arch, 0, end - 2),
        stmt(BPF_LD | BPF_W | BPF_ABS, NR_OFFSET),
    ];
    let eperm_at = len - 2;
    let enosys_at = len - 1;
    if x86 {
        let pc = p.len();
        p.push(jump(
            BPF_JMP | BPF_JGE | BPF_K,
            X32_SYSCALL_BIT,
            (eperm_at - pc - 1) as u8,
            0,
        ));
    }
    let pc = p.len();
    p.push(jump(
        BPF_JMP | BPF_JEQ | BPF_K,
        libc::SYS_clone3 as u32,
        (enosys_at - pc - 1) as u8,
        (len - pc - 1) as u8,
    ));
    p.push(stmt(BPF_RET | BPF_K, ret_errno(libc::EPERM)));
    p.push(stmt(BPF_RET | BPF_K, ret_errno(libc::ENOSYS)));
    debug_assert_eq!(p.len(), len);
    p
}

fn flag_rules(flags: &[(&str, u64)]) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    flags
        .iter()
        .map(|&(_, flag)| {
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )?])
        })
        .collect()
}

/// The filter for this architecture and what it does, compiled once per
/// process (it never changes).
pub(crate) fn compiled() -> Result<(Vec<libc::sock_filter>, SeccompReport), SandboxError> {
    static COMPILED: std::sync::OnceLock<(Vec<libc::sock_filter>, SeccompReport)> =
        std::sync::OnceLock::new();
    if let Some(c) = COMPILED.get() {
        return Ok(c.clone());
    }
    let c = compile()?;
    Ok(COMPILED.get_or_init(|| c).clone())
}

/// Compiles the filter for this architecture; returns the program and what it does.
fn compile() -> Result<(Vec<libc::sock_filter>, SeccompReport), SandboxError> {
    let arch_name = std::env::consts::ARCH;
    let (Some(audit), Ok(target)) = (audit_arch(), TargetArch::try_from(arch_name)) else {
        return Err(SandboxError::SeccompArch { arch: arch_name });
    };
    let err = |source| SandboxError::Seccomp {
        arch: arch_name,
        source,
    };
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&(_, nr)| (nr, Vec::new())).collect();
    let mut unshare_flags: Vec<(&str, u64)> = CLONE_NS_FLAGS.to_vec();
    unshare_flags.push(("CLONE_NEWTIME", CLONE_NEWTIME));
    rules.insert(libc::SYS_unshare, flag_rules(&unshare_flags).map_err(err)?);
    rules.insert(libc::SYS_clone, flag_rules(&CLONE_NS_FLAGS).map_err(err)?);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        target,
    )
    .map_err(err)?;
    let compiled: seccompiler::BpfProgram = filter.try_into().map_err(err)?;
    let mut program = prefix(audit);
    program.extend(compiled.into_iter().map(|i| libc::sock_filter {
        code: i.code,
        jt: i.jt,
        jf: i.jf,
        k: i.k,
    }));
    let report = SeccompReport {
        enabled: true,
        denied: DENIED.iter().map(|&(n, _)| n).collect(),
        denied_namespace_flags: unshare_flags.iter().map(|&(n, _)| n).collect(),
        clone3_enosys: true,
        x32_refused: audit == AUDIT_ARCH_X86_64,
        instructions: program.len(),
    };
    Ok((program, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic-BPF interpreter for the instructions seccompiler and the
    /// prefix emit, over a `seccomp_data`.
    fn run(prog: &[libc::sock_filter], arch: u32, nr: i32, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&nr.to_le_bytes());
        data.extend_from_slice(&arch.to_le_bytes());
        data.extend_from_slice(&0u64.to_le_bytes());
        for a in args {
            data.extend_from_slice(&a.to_le_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            let code = u32::from(i.code);
            match code & 0x07 {
                c if c == libc::BPF_LD => {
                    let off = i.k as usize;
                    acc = u32::from_le_bytes(data[off..off + 4].try_into().unwrap());
                    pc += 1;
                }
                c if c == libc::BPF_ALU => {
                    assert_eq!(code & 0xf0, libc::BPF_AND, "unexpected ALU op {code:#x}");
                    acc &= i.k;
                    pc += 1;
                }
                c if c == libc::BPF_JMP => {
                    let op = code & 0xf0;
                    if op == libc::BPF_JA {
                        pc += 1 + i.k as usize;
                        continue;
                    }
                    let taken = match op {
                        o if o == libc::BPF_JEQ => acc == i.k,
                        o if o == libc::BPF_JGE => acc >= i.k,
                        o if o == libc::BPF_JGT => acc > i.k,
                        o if o == libc::BPF_JSET => acc & i.k != 0,
                        _ => panic!("unexpected jump {code:#x}"),
                    };
                    pc += 1 + usize::from(if taken { i.jt } else { i.jf });
                }
                c if c == libc::BPF_RET => return i.k,
                _ => panic!("unexpected instruction {code:#x}"),
            }
        }
    }

    #[test]
    fn the_program_denies_what_it_lists_and_nothing_else() {
        let (prog, report) = compile().unwrap();
        assert!(prog.len() < 4096, "too long for the kernel");
        assert_eq!(report.instructions, prog.len());
        let arch = audit_arch().unwrap();
        let eperm = ret_errno(libc::EPERM);
        let call = |nr: i64, a0: u64| run(&prog, arch, nr as i32, [a0, 0, 0, 0, 0, 0]);
        for &(name, nr) in DENIED {
            assert_eq!(call(nr, 0), eperm, "{name} must be denied");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_mmap,
            libc::SYS_execve,
            libc::SYS_getpid,
            libc::SYS_seccomp,
        ] {
            assert_eq!(call(nr, 0), libc::SECCOMP_RET_ALLOW, "syscall {nr}");
        }
        // unshare / clone: only namespace flags are refused.
        let files = libc::CLONE_FILES as u64;
        assert_eq!(call(libc::SYS_unshare, files), libc::SECCOMP_RET_ALLOW);
        assert_eq!(
            call(libc::SYS_unshare, files | libc::CLONE_FS as u64),
            libc::SECCOMP_RET_ALLOW
        );
        for (name, flag) in CLONE_NS_FLAGS {
            assert_eq!(
                call(libc::SYS_unshare, flag | files),
                eperm,
                "unshare {name}"
            );
            assert_eq!(call(libc::SYS_clone, flag | 17), eperm, "clone {name}");
        }
        assert_eq!(call(libc::SYS_unshare, CLONE_NEWTIME), eperm);
        // fork = clone(SIGCHLD); pthread_create = clone(VM|FS|FILES|SIGHAND|THREAD|...).
        assert_eq!(call(libc::SYS_clone, 17), libc::SECCOMP_RET_ALLOW);
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(call(libc::SYS_clone, thread), libc::SECCOMP_RET_ALLOW);
        assert_eq!(call(libc::SYS_clone3, 0), ret_errno(libc::ENOSYS));
        // A foreign architecture is killed by seccompiler's check.
        assert_eq!(
            run(&prog, 0x4000_0003, libc::SYS_read as i32, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        if arch == AUDIT_ARCH_X86_64 {
            assert!(report.x32_refused);
            for nr in [
                0x4000_0000 | libc::SYS_getpid,
                0x4000_0000 | libc::SYS_mount,
            ] {
                assert_eq!(call(nr, 0), eperm, "x32 {nr:#x}");
            }
        }
    }
}
