//! Where training runs: `cpu` (the default) or `cuda[:N]` (with the `cuda` feature).

use candle_core::Device;

use crate::error::{NnError, Result};

/// A compute device named by the user (`--device cpu`, `--device cuda:1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeDevice {
    /// The CPU: the fused CPU kernels (bf16 or f32 GEMMs, checkpointing, fused loss).
    #[default]
    Cpu,
    /// An NVIDIA GPU by ordinal: the device-portable path (see [`crate::LoadOptions::portable`]).
    Cuda(usize),
}

impl ComputeDevice {
    /// Parses `cpu`, `cuda` (GPU 0) or `cuda:N`, case-insensitively.
    ///
    /// # Errors
    /// [`NnError::Device`] naming the text.
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        let bad = |reason: &str| NnError::Device { device: s.to_string(), reason: reason.to_string() };
        match t.as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => match t.strip_prefix("cuda:") {
                Some(n) => n.parse().map(Self::Cuda).map_err(|_| bad("expected cuda:N with N a GPU number, e.g. cuda:0")),
                None => Err(bad("expected cpu, cuda or cuda:N")),
            },
        }
    }

    /// True for a GPU.
    pub fn is_cuda(self) -> bool {
        matches!(self, Self::Cuda(_))
    }

    /// Whether this build can drive CUDA at all (the `cuda` feature).
    pub fn cuda_compiled() -> bool {
        cfg!(feature = "cuda")
    }

    /// Opens the device.
    ///
    /// # Errors
    /// [`NnError::Device`] when this build has no CUDA support (rebuild with
    /// `--features cuda`) or the GPU cannot be opened (no driver, no such ordinal).
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(i) => {
                if !Self::cuda_compiled() {
                    return Err(NnError::Device {
                        device: self.to_string(),
                        reason: "this build of Trident has no CUDA support; rebuild with `cargo build --release -p trident-cli --features cuda`".into(),
                    });
                }
                Device::new_cuda(i).map_err(|e| {
                    // candle appends a backtrace to its errors: the first line is the reason.
                    let text = e.to_string();
                    let first = text.lines().next().unwrap_or_default().trim().to_string();
                    NnError::Device { device: self.to_string(), reason: format!("cannot open the GPU: {first}") }
                })
            }
        }
    }
}

impl std::fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_devices() {
        assert_eq!(ComputeDevice::parse("CPU").unwrap(), ComputeDevice::Cpu);
        assert_eq!(ComputeDevice::parse("cuda").unwrap(), ComputeDevice::Cuda(0));
        assert_eq!(ComputeDevice::parse(" cuda:3 ").unwrap(), ComputeDevice::Cuda(3));
        assert_eq!(ComputeDevice::Cuda(2).to_string(), "cuda:2");
        for bad in ["tpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let e = ComputeDevice::parse(bad).unwrap_err();
            assert!(e.is_user_error() && e.to_string().contains(&format!("`{bad}`")), "{bad}: {e}");
        }
        assert!(ComputeDevice::Cpu.open().unwrap().is_cpu());
    }

    /// Without the `cuda` feature the error says how to get it; with it (and no GPU, as in
    /// CI) opening fails with the driver's reason rather than panicking.
    #[test]
    fn cuda_without_a_gpu_is_a_clear_error() {
        match ComputeDevice::Cuda(0).open() {
            Ok(d) => assert!(d.is_cuda()),
            Err(e) => {
                let text = e.to_string();
                assert!(text.starts_with("device `cuda:0`"), "{text}");
                if !ComputeDevice::cuda_compiled() {
                    assert!(text.contains("--features cuda"), "{text}");
                }
            }
        }
    }
}
