//! What the CLI prints on stdout. A closed stdout (`ephemera status | head`)
//! ends the process quietly with 141, as other Unix tools do, instead of
//! the panic `println!` raises. SIGPIPE itself stays ignored (Rust's
//! default): its default action would kill a controller whenever a peer
//! resets a socket it writes with `writev`, as hyper does.

use std::fmt;
use std::io::{self, Write};

/// Exit code of a process whose output pipe was closed (128 + SIGPIPE).
const CLOSED_PIPE_EXIT: i32 = 141;

/// Prints one line on stdout (see [`say!`](crate::say)).
pub fn line(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}").and_then(|()| out.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(CLOSED_PIPE_EXIT);
        }
        eprintln!("error: writing to stdout: {e}");
    }
}

/// `println!` for the CLI's output: a closed stdout ends the process quietly.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

/// Prints `value` as pretty JSON.
pub fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    line(format_args!("{}", serde_json::to_string_pretty(value)?));
    Ok(())
}
