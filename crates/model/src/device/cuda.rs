//! Opening a GPU with errors a user can act on, and the GPU memory figures
//! of a stage's summary (feature `cuda`).
//!
//! `make build CUDA=1` builds cudarc with dynamic loading: no CUDA library
//! is linked, each is opened on first use, so the binaries start on a
//! machine without a driver and `--device cpu` works there. cudarc panics
//! when a library it opens is missing, and a driver error reads
//! `DriverError(CUDA_ERROR_…)`; so every library and the device are checked
//! here first, and each failure is one line naming the device and what to
//! check. (A plain `cargo build --features cuda` links the libraries
//! instead, as candle asks; these checks then pass trivially.)

use std::ffi::{c_int, c_void, CString};

use anyhow::{anyhow, Result};
use candle_core::cuda_backend::cudarc::driver::result::{self, DriverError};
use candle_core::cuda_backend::cudarc::driver::sys;
use candle_core::cuda_backend::CudaDevice;
use candle_core::Device;

/// The CUDA version (`13000`) and the compute capability (`80`) this
/// build's kernels were compiled for, when the build said (make does;
/// `mk/cuda.mk`). cargo rebuilds this crate when either changes.
const BUILD_CUDA: Option<&str> = option_env!("CUDARC_CUDA_VERSION");
const BUILD_COMPUTE_CAP: Option<&str> = option_env!("CUDA_COMPUTE_CAP");

/// The build's CUDA version as the driver API writes it (13000 = 13.0).
fn build_cuda() -> Option<i32> {
    BUILD_CUDA?.trim().parse().ok()
}

fn version_text(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// The names cudarc tries for library `name` (its `get_lib_name_candidates`
/// on Linux), for the build's major version.
fn candidates(name: &str) -> Vec<String> {
    let mut v = vec![format!("lib{name}.so")];
    let major = build_cuda().map(|c| c / 1000).unwrap_or(13);
    for m in [major, 12, 11, 10, 9, 1] {
        let s = format!("lib{name}.so.{m}");
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v
}

/// Whether the dynamic loader finds one of `names` (the library stays
/// loaded, as cudarc would keep it).
fn loadable(names: &[String]) -> bool {
    names.iter().any(|n| {
        let c = CString::new(n.as_str()).expect("no NUL in a library name");
        // SAFETY: dlopen of a CUDA library runs no code of ours; the handle
        // is kept for the life of the process, as cudarc keeps its own.
        !unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) }.is_null()
    })
}

fn driver_advice(e: DriverError) -> String {
    use sys::CUresult as R;
    match e.0 {
        R::CUDA_ERROR_NO_DEVICE => {
            "the driver sees no NVIDIA GPU (check `nvidia-smi` and CUDA_VISIBLE_DEVICES)".into()
        }
        R::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH
        | R::CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE
        | R::CUDA_ERROR_UNSUPPORTED_PTX_VERSION => format!(
            "the NVIDIA driver is too old for this build's CUDA{} ({:?}): update the driver \
             (`nvidia-smi` shows the CUDA version it supports)",
            build_cuda()
                .map(|v| format!(" {}", version_text(v)))
                .unwrap_or_default(),
            e.0
        ),
        other => format!(
            "the NVIDIA driver failed to start ({other:?}); check that `nvidia-smi` works, \
             that the driver's libcuda.so.1 matches its kernel module, and dmesg"
        ),
    }
}

/// Opens `cuda:<ordinal>`, or says in one line why it cannot be used.
pub(super) fn open(spec: &str, ordinal: usize) -> Result<Device> {
    let fail = |what: String| anyhow!("--device {spec}: {what}");
    let cuda = candidates("cuda");
    if !loadable(&cuda) {
        return Err(fail(format!(
            "the NVIDIA driver library is not found (tried {}): this machine has no NVIDIA \
             driver, or its directory is neither in the loader's cache nor on LD_LIBRARY_PATH \
             (check `nvidia-smi`)",
            cuda.join(", ")
        )));
    }
    result::init().map_err(|e| fail(driver_advice(e)))?;
    let mut driver: c_int = 0;
    // SAFETY: writes one int; the driver is initialised above.
    unsafe { sys::cuDriverGetVersion(&mut driver) }
        .result()
        .map_err(|e| fail(driver_advice(e)))?;
    if let Some(need) = build_cuda() {
        if driver < need {
            return Err(fail(format!(
                "the NVIDIA driver supports CUDA up to {}, this build's kernels need CUDA {} \
                 (its PTX is refused by an older driver): update the driver, or build with an \
                 older toolkit (README, \"GPU\")",
                version_text(driver),
                version_text(need)
            )));
        }
    }
    let count = result::device::get_count().map_err(|e| fail(driver_advice(e)))?;
    if count <= 0 {
        return Err(fail(driver_advice(DriverError(
            sys::CUresult::CUDA_ERROR_NO_DEVICE,
        ))));
    }
    if ordinal >= count as usize {
        return Err(fail(format!(
            "there is no GPU {ordinal}: the driver sees {count} (cuda:0 to cuda:{}; \
             CUDA_VISIBLE_DEVICES may hide others)",
            count - 1
        )));
    }
    let dev = result::device::get(ordinal as c_int).map_err(|e| fail(driver_advice(e)))?;
    let name = result::device::get_name(dev).unwrap_or_else(|_| "an NVIDIA GPU".into());
    let attribute = |a| {
        // SAFETY: `dev` came from `device::get` above.
        unsafe { result::device::get_attribute(dev, a) }.map_err(|e| fail(driver_advice(e)))
    };
    use sys::CUdevice_attribute::*;
    let cap = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)? * 10
        + attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    if let Some(built) = BUILD_COMPUTE_CAP.and_then(|c| c.trim().parse::<i32>().ok()) {
        if cap < built {
            return Err(fail(format!(
                "{name} has compute capability {}.{}, older than the {}.{} this build's kernels \
                 were compiled for: rebuild with `make build CUDA=1 CUDA_COMPUTE_CAP={cap}`",
                cap / 10,
                cap % 10,
                built / 10,
                built % 10
            )));
        }
    }
    // candle opens cuBLAS, cuBLASLt and cuRAND with the device.
    for lib in ["cublas", "cublasLt", "curand"] {
        let names = candidates(lib);
        if !loadable(&names) {
            return Err(fail(format!(
                "{name} is there, but CUDA's {lib} library is not found (tried {}): put the \
                 directory holding the CUDA{} libraries on LD_LIBRARY_PATH (a toolkit's lib64, \
                 or site-packages/nvidia/cu13/lib of pip's nvidia-cublas and nvidia-curand)",
                names.join(", "),
                build_cuda()
                    .map(|v| format!(" {}", v / 1000))
                    .unwrap_or_default()
            )));
        }
    }
    Device::new_cuda(ordinal).map_err(|e| fail(format!("{name}: {e}")))
}

/// The default memory pool of the device's context (cudarc allocates every
/// tensor from it with `cuMemAllocAsync`), when the device has pools.
fn pool(d: &CudaDevice) -> Option<sys::CUmemoryPool> {
    let ctx = d.cuda_stream().context().clone();
    if !ctx.has_async_alloc() || ctx.bind_to_thread().is_err() {
        return None;
    }
    // SAFETY: the device is the context's own.
    unsafe { result::device::get_default_mem_pool(ctx.cu_device()) }.ok()
}

pub(super) fn peak_bytes(d: &CudaDevice) -> Option<u64> {
    let _ = d.cuda_stream().synchronize();
    let pool = pool(d)?;
    let mut high: u64 = 0;
    // SAFETY: the attribute is a cuuint64_t.
    unsafe {
        result::mem_pool::get_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
            &mut high as *mut u64 as *mut c_void,
        )
    }
    .ok()?;
    Some(high)
}

pub(super) fn reset_peak(d: &CudaDevice) {
    let _ = d.cuda_stream().synchronize();
    if let Some(pool) = pool(d) {
        let mut zero: u64 = 0;
        // SAFETY: setting the high-water mark takes a cuuint64_t of 0 (the
        // driver's only accepted value: reset to the current use).
        let _ = unsafe {
            result::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                &mut zero as *mut u64 as *mut c_void,
            )
        };
    }
}

/// `peak X GiB in tensors · Y of Z GiB in use on the device`.
pub(super) fn memory_summary(d: &CudaDevice) -> String {
    let gib = |b: f64| b / (1u64 << 30) as f64;
    let peak = match peak_bytes(d) {
        Some(b) => format!("peak {:.2} GiB in tensors", gib(b as f64)),
        None => "peak not known (no memory pool)".into(),
    };
    let ctx = d.cuda_stream().context().clone();
    match ctx.mem_get_info() {
        Ok((free, total)) => format!(
            "{peak} · {:.2} of {:.1} GiB in use on cuda:{} at the end (all processes)",
            gib((total - free) as f64),
            gib(total as f64),
            ctx.ordinal()
        ),
        Err(_) => peak,
    }
}
