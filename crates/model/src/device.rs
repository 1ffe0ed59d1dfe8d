//! Choosing where tensors live: `cpu` (default) or `cuda[:N]` when built
//! with the `cuda` feature (`make build CUDA=1`), and what a stage reports
//! about the GPU it used.

use anyhow::{bail, Result};
use candle_core::Device;

#[cfg(feature = "cuda")]
mod cuda;

pub fn parse(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = s
                .strip_prefix("cuda:")
                .map(|n| n.parse::<usize>())
                .transpose()
                .map_err(|_| anyhow::anyhow!("--device {s}: bad GPU index"))?
                .unwrap_or(0);
            open_cuda(s, ordinal)
        }
        other => bail!("--device {other:?}: expected cpu, cuda or cuda:N"),
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(spec: &str, ordinal: usize) -> Result<Device> {
    cuda::open(spec, ordinal)
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(spec: &str, _ordinal: usize) -> Result<Device> {
    bail!(
        "--device {spec}: this build has no CUDA support (build it with `make build CUDA=1`, \
         or cargo's `--features cuda`)"
    )
}

/// One line on the GPU memory a stage used, for its summary: the peak of
/// the memory its tensors held (the high-water mark of the device's
/// stream-ordered pool, which every candle allocation goes through), what
/// the device had in use at the end (all processes, cuBLAS workspaces and
/// the context included) and its size. `None` on the CPU: the CPU's memory
/// is the process's (`/usr/bin/time -v` reports its peak).
pub fn memory_summary(device: &Device) -> Option<String> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => Some(cuda::memory_summary(d)),
        _ => None,
    }
}

/// Bytes the device's tensors held at most since the device was opened or
/// [`reset_peak_memory`] (the pool's high-water mark, as PyTorch's
/// `max_memory_allocated`); `None` on the CPU.
pub fn peak_memory_bytes(device: &Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => cuda::peak_bytes(d),
        _ => None,
    }
}

/// Starts [`peak_memory_bytes`] again from what is held now.
pub fn reset_peak_memory(device: &Device) {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => cuda::reset_peak(d),
        _ => {}
    }
}

/// The default number of sequences a sampling stage (rollout, eval) runs
/// in one batch: 8 on the CPU, where a larger batch only adds padding, and
/// 64 on a GPU, whose throughput grows with the batch up to far more rows
/// than a CPU's (sampling is memory-bound at small batches).
pub fn default_sampling_batch(device: &Device) -> usize {
    if device.is_cpu() {
        8
    } else {
        64
    }
}

/// The `--dtype` default: bf16 on a GPU (tensor cores, half the memory),
/// f32 on the CPU (no fast bf16 matmul there).
pub const DEFAULT_DTYPE: &str = "auto";

/// The dtype a model computes in: `auto`, `f32`, `bf16` or `f16`. A model
/// being trained keeps f32 master weights whatever this is
/// (`checkpoint::Use`).
pub fn dtype(spec: &str, device: &Device) -> Result<candle_core::DType> {
    use candle_core::DType;
    Ok(match spec {
        "auto" if device.is_cpu() => DType::F32,
        "auto" => DType::BF16,
        "f32" | "float32" => DType::F32,
        "bf16" | "bfloat16" => DType::BF16,
        "f16" | "float16" => DType::F16,
        other => bail!("--dtype {other:?}: expected auto, f32, bf16 or f16"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_defaults_to_f32_on_the_cpu() {
        use candle_core::DType;
        assert_eq!(dtype("auto", &Device::Cpu).unwrap(), DType::F32);
        assert_eq!(dtype("bf16", &Device::Cpu).unwrap(), DType::BF16);
        let e = dtype("fp8", &Device::Cpu).unwrap_err().to_string();
        assert_eq!(e, "--dtype \"fp8\": expected auto, f32, bf16 or f16");
    }

    #[test]
    fn training_keeps_f32_master_weights_under_half_precision() {
        use crate::checkpoint::Use;
        use candle_core::DType;
        for compute in [DType::BF16, DType::F16, DType::F32] {
            assert_eq!(Use::Training.storage(compute), DType::F32);
            assert_eq!(Use::Inference.storage(compute), compute);
        }
    }

    #[test]
    fn the_cpu_reports_no_gpu_memory_and_samples_in_small_batches() {
        assert_eq!(memory_summary(&Device::Cpu), None);
        assert_eq!(peak_memory_bytes(&Device::Cpu), None);
        assert_eq!(default_sampling_batch(&Device::Cpu), 8);
    }

    /// Without a GPU (CI, this build or not), `--device cuda` is one line
    /// naming the device and what to do, never a panic.
    #[test]
    fn cuda_without_a_gpu_is_one_line_naming_the_device() {
        let e = parse("cuda:999").unwrap_err().to_string();
        assert!(e.starts_with("--device cuda:999: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
        #[cfg(not(feature = "cuda"))]
        assert!(e.contains("make build CUDA=1"), "{e}");
        let e = parse("cuda:x").unwrap_err().to_string();
        assert_eq!(e, "--device cuda:x: bad GPU index");
    }
}
