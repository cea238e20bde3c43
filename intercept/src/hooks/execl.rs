//! `execl`, `execlp`, `execle`: variadic, so they cannot be written as
//! ordinary Rust functions, and glibc implements them with an internal
//! `execve` our hook never sees. On x86-64 a naked trampoline lays the
//! variadic arguments out as an argv array on the stack (the register
//! arguments pushed right below the caller's stack arguments) and calls a
//! Rust helper that syncs the tier and calls the `v` variant.

use libc::{c_char, c_int};

use super::process::sync_all;

/// The argv array ends at its NULL; `execle`'s envp follows it.
///
/// # Safety
/// `argv` must hold a NULL-terminated list, as the `execl` contract says.
unsafe fn envp_after(argv: *const *const c_char) -> *const *const c_char {
    let mut i = 0;
    // SAFETY: the list is NULL-terminated per the contract.
    while !unsafe { *argv.add(i) }.is_null() {
        i += 1;
    }
    // SAFETY: execle passes envp right after the terminating NULL.
    unsafe { *argv.add(i + 1) as *const *const c_char }
}

extern "C" fn execl_helper(path: *const c_char, argv: *const *const c_char) -> c_int {
    sync_all();
    // SAFETY: the caller's arguments, as execv expects them.
    super::pass!(execv(path, argv), crate::sys::fail(libc::ENOSYS))
}

extern "C" fn execlp_helper(file: *const c_char, argv: *const *const c_char) -> c_int {
    sync_all();
    // SAFETY: the caller's arguments, as execvp expects them.
    super::pass!(execvp(file, argv), crate::sys::fail(libc::ENOSYS))
}

extern "C" fn execle_helper(path: *const c_char, argv: *const *const c_char) -> c_int {
    sync_all();
    // SAFETY: execle's argument list is NULL-terminated and followed by envp.
    let envp = unsafe { envp_after(argv) };
    // SAFETY: the caller's arguments, as execve expects them.
    super::pass!(execve(path, argv, envp), crate::sys::fail(libc::ENOSYS))
}

/// The trampoline body: on entry `rdi` = path, `rsi`..`r9` = the first five
/// variadic arguments, the rest on the stack above the return address.
/// Popping the return address and pushing `r9`..`rsi` makes one contiguous
/// array starting at `rsp`; the stack stays 16-byte aligned at the call.
macro_rules! trampoline {
    ($name:ident, $helper:ident) => {
        #[no_mangle]
        #[unsafe(naked)]
        pub unsafe extern "C" fn $name() {
            core::arch::naked_asm!(
                "pop r11",
                "push r9",
                "push r8",
                "push rcx",
                "push rdx",
                "push rsi",
                "mov rsi, rsp",
                "push r11",
                "call {helper}",
                "pop r11",
                "add rsp, 40",
                "push r11",
                "ret",
                helper = sym $helper,
            )
        }
    };
}

trampoline!(execl, execl_helper);
trampoline!(execlp, execlp_helper);
trampoline!(execle, execle_helper);
