//! Devices: parsing `device:` values, checking that this build and machine
//! can provide them, and turning them into candle devices.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

/// A device as written in a pipeline: `cpu`, `cuda`, `cuda:N` or `auto`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    /// The CPU.
    #[default]
    Cpu,
    /// A CUDA GPU, by ordinal.
    Cuda(usize),
    /// CUDA when this build has it and a GPU is present, else the CPU.
    Auto,
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            "auto" => Ok(DeviceSpec::Auto),
            _ => match text.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => Err(format!(
                    "`{text}` is not a device: use `cpu`, `cuda`, `cuda:N` or `auto`"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Auto => f.write_str("auto"),
        }
    }
}

/// Set when the nodes run elsewhere (`kiln export`): devices are then
/// checked by the machines that run them, not by this one.
static RUN_ELSEWHERE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Validation stops asking this machine for the pipeline's devices, for the
/// rest of the process (an exported pipeline's GPU nodes run on the cluster's GPUs).
pub fn check_devices_elsewhere() {
    RUN_ELSEWHERE.store(true, std::sync::atomic::Ordering::Relaxed);
}

impl DeviceSpec {
    /// Says why this build or machine can't provide the device, if it can't.
    pub fn check_available(self) -> Result<(), String> {
        if RUN_ELSEWHERE.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        match self {
            DeviceSpec::Cpu | DeviceSpec::Auto => Ok(()),
            DeviceSpec::Cuda(n) => {
                if !cfg!(feature = "cuda") {
                    return Err(format!(
                        "device `cuda:{n}` needs a kiln built with CUDA support \
                         (`cargo build --release --features cuda`); this build runs on the CPU only, \
                         so use `device: cpu` or `device: auto`"
                    ));
                }
                Device::new_cuda(n).map(|_| ()).map_err(|e| {
                    format!("device `cuda:{n}` is not available on this machine ({e}); use `device: auto` to fall back to the CPU")
                })
            }
        }
    }

    /// The candle device to run on. `auto` falls back to the CPU when no GPU answers.
    pub fn resolve(self) -> Result<Device, DeviceError> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(ordinal) => {
                Device::new_cuda(ordinal).map_err(|source| DeviceError { ordinal, source })
            }
            DeviceSpec::Auto => Ok(Device::new_cuda(0).unwrap_or(Device::Cpu)),
        }
    }
}

/// A GPU that did not open.
#[derive(Debug, thiserror::Error)]
#[error("cannot open cuda:{ordinal}: {source}")]
pub struct DeviceError {
    /// Which GPU.
    pub ordinal: usize,
    /// candle's reason.
    #[source]
    pub source: candle_core::Error,
}

/// A device's name for reports: `cpu` or `cuda:N`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}
