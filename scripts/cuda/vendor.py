#!/usr/bin/env python3
"""The crates.io source the CUDA build compiles from: every package of
Cargo.lock as cargo downloaded it (links into cargo's own registry copy),
except two with a patched build script. `scripts/cuda/cargo.sh` points cargo
at it with source replacement (`--config source.crates-io.replace-with`),
which keeps Cargo.lock as it is (`--locked` holds) and leaves the CPU build
untouched.

The two patches (DESIGN.md, "Devices"):

- cudarc: candle asks for its `dynamic-linking` feature, which links
  libcuda, cuBLAS, cuBLASLt, cuRAND and NVRTC into every binary, so a CUDA
  build needs all of them to link and a driver to start at all, even for
  `--device cpu`. cudarc's `dynamic-loading` (each library opened on first
  use) cannot be asked for beside it (its build script panics on both), so
  the patch makes `dynamic-linking` mean dynamic loading: nothing CUDA is
  linked, and a missing library is reported when a GPU is opened
  (crates/model/src/device/cuda.rs).
- candle-kernels: besides the PTX of candle's element-wise kernels, its
  build script compiles the GGUF-quantized and mixture-of-experts kernels
  to machine code for one GPU and links them with the CUDA runtime. marlhf
  runs neither (no quantized weights, no MoE layers); the patch builds the
  PTX alone, which is most of the time of a CUDA build saved and no
  link-time library.

usage: vendor.py CARGO_LOCK CARGO_HOME OUT_DIR
"""

import glob
import json
import os
import shutil
import sys


def lock_packages(path):
    """(name, version, checksum) of every crates.io package in Cargo.lock
    (a plain reader: the file's layout is cargo's, one key per line)."""
    pkgs, cur = [], None
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line == "[[package]]":
            cur = {}
            pkgs.append(cur)
        elif cur is not None and " = " in line and not line.startswith("["):
            k, v = line.split(" = ", 1)
            if v.startswith('"'):
                cur[k] = v.strip('"')
    return [
        (p["name"], p["version"], p["checksum"])
        for p in pkgs
        if p.get("source", "").startswith("registry+") and "checksum" in p
    ]


def patch_cudarc(text):
    old = '    #[cfg(feature = "dynamic-linking")]\n    dynamic_linking(major, minor);\n'
    new = (
        "    // marlhf (scripts/cuda/vendor.py): load the libraries at run time.\n"
        '    #[cfg(feature = "dynamic-linking")]\n'
        '    println!("cargo:rustc-cfg=feature=\\"dynamic-loading\\"");\n'
    )
    if text.count(old) != 1:
        sys.exit("scripts/cuda/vendor.py: cudarc's build.rs changed; review the patch")
    return text.replace(old, new)


def patch_candle_kernels(text):
    start, end = "    let mut moe_sources", "    Ok(())\n}"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        sys.exit("scripts/cuda/vendor.py: candle-kernels' build.rs changed; review the patch")
    i, j = text.index(start), text.index(end)
    return (
        text[:i]
        + "    // marlhf (scripts/cuda/vendor.py): no GGUF/MoE kernels, no CUDA runtime.\n"
        + text[j:]
    )


PATCHES = {
    ("cudarc", "0.19.10"): ("build.rs", patch_cudarc),
    ("candle-kernels", "0.11.1"): ("build.rs", patch_candle_kernels),
}


def write_if_changed(path, text):
    """Rewrites only a changed file, so cargo sees no new build script."""
    if os.path.islink(path):
        os.remove(path)
    if os.path.exists(path) and open(path, encoding="utf-8").read() == text:
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main():
    lock, cargo_home, out = sys.argv[1:4]
    registries = sorted(glob.glob(os.path.join(cargo_home, "registry", "src", "index.crates.io-*")))
    os.makedirs(out, exist_ok=True)
    packages = lock_packages(lock)
    # Packages of an older Cargo.lock go: cargo reads every directory here.
    wanted = {f"{n}-{v}" for n, v, _ in packages}
    for entry in os.listdir(out):
        if entry not in wanted:
            shutil.rmtree(os.path.join(out, entry))
    patched = set()
    for name, version, checksum in packages:
        found = [r for r in registries if os.path.isdir(os.path.join(r, f"{name}-{version}"))]
        if not found:
            sys.exit(f"{name} {version}: not in {cargo_home}/registry/src (run `cargo fetch --locked` first)")
        src = os.path.join(found[0], f"{name}-{version}")
        dst = os.path.join(out, f"{name}-{version}")
        os.makedirs(dst, exist_ok=True)
        patch = PATCHES.get((name, version))
        for entry in os.listdir(src):
            if entry == ".cargo-checksum.json" or (patch and entry == patch[0]):
                continue
            link = os.path.join(dst, entry)
            if not os.path.lexists(link):
                os.symlink(os.path.join(src, entry), link)
        if patch:
            file, fix = patch
            original = open(os.path.join(src, file), encoding="utf-8").read()
            write_if_changed(os.path.join(dst, file), fix(original))
            patched.add(name)
        # A directory source checks each package against Cargo.lock's
        # checksum and the files listed here (none: the links are cargo's
        # own verified copies, the patched files are ours).
        write_if_changed(
            os.path.join(dst, ".cargo-checksum.json"),
            json.dumps({"files": {}, "package": checksum}),
        )
    missing = {n for n, _ in PATCHES} - patched
    if missing:
        sys.exit(f"scripts/cuda/vendor.py: Cargo.lock lacks {sorted(missing)} at the patched versions")


if __name__ == "__main__":
    main()
