//! `vswitch-cni`: the CNI plugin of vswitch (see [`switch::cni`]). A container runtime runs it
//! with `CNI_COMMAND` and the other `CNI_*` variables set and the network configuration on
//! stdin; it prints the result, or a CNI error object, on stdout.

use std::io::{Read, Write};

fn main() {
    let env = switch::cni::Env::from_vars(|k| std::env::var(k).ok());
    // VERSION may come with an empty stdin; every other command reads its configuration.
    let mut buf = Vec::new();
    let stdin = std::io::stdin().read_to_end(&mut buf).map(|_| buf);
    let out = switch::cni::main_with(&env, stdin);
    let mut so = std::io::stdout();
    let _ = so.write_all(out.stdout.as_bytes());
    let _ = so.flush();
    std::process::exit(out.status);
}
