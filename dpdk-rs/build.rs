//! Binds the system DPDK: pkg-config names the flags, bindgen reads the headers with exactly the
//! flags the C compiler gets (DPDK force-includes `rte_config.h`), and `cc` builds the shim that
//! exports DPDK's static-inline fast functions.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const INSTALL_HINT: &str =
    "apt-get install -y libdpdk-dev dpdk dpdk-dev pkg-config clang libclang-dev";

fn pkg_config(arg: &str) -> String {
    let out = Command::new("pkg-config")
        .args([arg, "libdpdk"])
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run pkg-config ({e})")));
    if !out.status.success() {
        fail("pkg-config does not know libdpdk");
    }
    String::from_utf8(out.stdout).unwrap_or_else(|_| fail("pkg-config printed non-UTF-8"))
}

fn fail(why: &str) -> ! {
    // One line: the build log of a -sys crate is long, this is the line people need.
    eprintln!("error: DPDK 22.11 not found: {why}; install it with: {INSTALL_HINT}");
    std::process::exit(1);
}

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let version = pkg_config("--modversion").trim().to_string();
    if !version.starts_with("22.11") {
        println!("cargo:warning=dpdk-rs is written against DPDK 22.11; found {version}");
    }
    println!("cargo:rustc-env=DPDK_PKG_VERSION={version}");
    println!("cargo:version={version}");

    // `-include rte_config.h` is two words that must stay together; everything else is one flag each.
    let cflags: Vec<String> = {
        let mut flags = Vec::new();
        let mut words = pkg_config("--cflags")
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
            .into_iter();
        while let Some(w) = words.next() {
            if w == "-include" {
                if let Some(file) = words.next() {
                    flags.push(format!("-include{file}"));
                }
            } else {
                flags.push(w);
            }
        }
        flags
    };

    for word in pkg_config("--libs").split_whitespace() {
        if let Some(lib) = word.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        } else if let Some(dir) = word.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if word.starts_with("-Wl,") {
            println!("cargo:rustc-link-arg={word}");
        }
    }

    let mut shim = cc::Build::new();
    shim.file("shim/shim.c")
        .include("shim")
        .opt_level(3)
        .warnings(true);
    for f in &cflags {
        shim.flag(f);
    }
    shim.compile("l4lb_dpdk_shim");

    let bindings = bindgen::Builder::default()
        .header("shim/shim.h")
        .clang_args(&cflags)
        .clang_arg("-Ishim")
        .allowlist_function("rte_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        .allowlist_var("SOCKET_ID_ANY")
        .allowlist_var("RING_F_.*")
        .allowlist_function("l4lb_.*")
        .allowlist_var("l4lb_.*")
        // rte_flow_item_gtp_psc holds a packed bit-field header whose Debug derive does not
        // compile (E0277); it is the only type of these headers that needs special treatment.
        .no_debug("rte_flow_item_gtp_psc")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| fail(&format!("bindgen could not read the DPDK headers ({e})")));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");
}
