//! `ephemera run` repairs the tier after the command is killed: a process
//! SIGKILLed right after cutting a mapped tier file to 100 bytes leaves a
//! reservation (zero padding) in the kernel size; once `ephemera run`
//! returns, the file holds exactly its 100 bytes.

mod common;

#[test]
fn a_killed_command_leaves_no_padding_after_ephemera_run() {
    let tier = tempfile::tempdir().unwrap();
    let file = tier.path().join("f");
    // Opened at 80 KiB, the file is mapped; cut to 100 B in memory, its
    // kernel size keeps the 80 KiB as reservation.
    let script = "import os, sys\n\
open(sys.argv[1], 'wb').write(b'x' * (80 << 10))\n\
fd = os.open(sys.argv[1], os.O_RDWR)\n\
os.ftruncate(fd, 100)\n\
os.kill(os.getpid(), 9)\n";
    let out = std::process::Command::new(common::ephemera())
        .args(["run", "--mode", "memory", "--tier-dir"])
        .arg(tier.path())
        .args(["--", "python3", "-c", script])
        .arg(&file)
        .output()
        .expect("run ephemera run");
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert_eq!(std::fs::read(&file).unwrap(), vec![b'x'; 100], "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("trimmed 1 tier file"),
        "{out:?}"
    );
}
