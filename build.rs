//! Links the `ringback` binary as a position-dependent executable on Linux: a PIE's 1.8 MB of
//! pointer tables are rewritten by the loader at every start (private, resident memory) from a
//! 1.8 MB relocation table read in full; without PIE they stay clean pages of the file. This is
//! Go's default, and so how Alertmanager ships. The cost is that the binary's own code is not
//! placed at a random address (libraries, heap and stacks still are): set `RINGBACK_PIE=1` when
//! building to keep that hardening at 2 MB more resident memory.

fn main() {
    println!("cargo:rerun-if-env-changed=RINGBACK_PIE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if linux && std::env::var_os("RINGBACK_PIE").is_none() {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
