//! Builds the connection drain's tc BPF program (src/drain/bpf/drain.bpf.c) with clang, for the
//! binary to embed. Without clang the build goes on with the drain left out: the daemon then
//! says so at start when a router asks for drains (`drain_ms`), and hands VIPs over as before.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "src/drain/bpf/drain.bpf.c";
    println!("cargo::rerun-if-changed={source}");
    println!("cargo::rerun-if-env-changed=CLANG");
    println!("cargo::rustc-check-cfg=cfg(nginx_ha_bpf)");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("drain.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    // <asm/types.h> lives under the multiarch include directory on Debian and Ubuntu.
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-I", &multiarch, "-c", source, "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(status) if status.success() => println!("cargo::rustc-cfg=nginx_ha_bpf"),
        Ok(status) => panic!("{clang} could not build {source} ({status}); fix the program, or build without clang"),
        Err(e) => println!(
            "cargo::warning=no {clang} ({e}): building without the connection drain (install clang, e.g. apt-get install clang, to have it)"
        ),
    }
}
