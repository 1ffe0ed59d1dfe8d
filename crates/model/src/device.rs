//! Choosing where tensors live: `cpu` (default) or `cuda[:N]` when built
//! with the `cuda` feature.

use anyhow::{bail, Result};
use candle_core::Device;

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
            if !candle_core::utils::cuda_is_available() {
                bail!(
                    "--device {s}: this build has no CUDA support (rebuild with `--features cuda`)"
                );
            }
            Ok(Device::new_cuda(ordinal)?)
        }
        other => bail!("--device {other:?}: expected cpu, cuda or cuda:N"),
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
}
