//! `ephemera-proxy`: the in-instance proxy. Starts the function's launcher and
//! serves the node agent on a unix socket; see `ephemera_node_agent::proxy`.

use clap::Parser;
use ephemera_node_agent::proxy::server::{run, ProxyArgs};

fn main() {
    let args = ProxyArgs::parse();
    if let Err(e) = run(args) {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
