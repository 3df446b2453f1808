//! `CudaStorage`: a tensor's elements in one device buffer of the device that owns it. The buffer
//! is typed by dtype (bf16 and f16 travel as their `u16` bits, which is what the kernels read);
//! the `Arc<CudaDevice>` keeps the context, stream and modules alive as long as any buffer is.
//!
//! Deliberately not here: `Clone` (a copy is a device allocation that can fail: `copy_range`
//! returns a `Result`), pinned host staging, peer-to-peer copies between GPUs (those go through
//! the host in `Tensor::to_device`).

use super::device::{CudaDevice, DeviceBuffer};
use crate::{bf16, f16, CpuStorage, DType, Error, Result};
use std::ops::Range;
use std::sync::Arc;

/// One typed device buffer.
pub enum CudaData {
    F32(DeviceBuffer<f32>),
    BF16(DeviceBuffer<u16>),
    F16(DeviceBuffer<u16>),
    U8(DeviceBuffer<u8>),
    I32(DeviceBuffer<i32>),
}

/// Apply `$body` with `$b` bound to the typed buffer of a [`CudaData`], whatever its dtype.
macro_rules! with_cuda_data {
    ($d:expr, $b:ident => $body:expr) => {
        match $d {
            CudaData::F32($b) => $body,
            CudaData::BF16($b) => $body,
            CudaData::F16($b) => $body,
            CudaData::U8($b) => $body,
            CudaData::I32($b) => $body,
        }
    };
}

/// Device memory of one tensor: `len` elements of one dtype on one device. The buffer holds at
/// least one element (an empty tensor gets a one-element buffer, so its address is valid).
pub struct CudaStorage {
    data: CudaData,
    len: usize,
    device: Arc<CudaDevice>,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaStorage({:?}, {} elements, cuda:{})", self.dtype(), self.len, self.device.ordinal())
    }
}

fn derr(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("cuda: {what}: {e}"))
}

impl CudaStorage {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self.data {
            CudaData::F32(_) => DType::F32,
            CudaData::BF16(_) => DType::BF16,
            CudaData::F16(_) => DType::F16,
            CudaData::U8(_) => DType::U8,
            CudaData::I32(_) => DType::I32,
        }
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The device holding the buffer.
    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.device
    }
    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.device.ordinal()
    }
    /// The typed buffer.
    pub fn data(&self) -> &CudaData {
        &self.data
    }

    /// `len` zeroed elements of `dtype` on `device`.
    pub fn zeros(device: &Arc<CudaDevice>, dtype: DType, len: usize) -> Result<Self> {
        let data = match dtype {
            DType::F32 => CudaData::F32(device.zeros(len)?),
            DType::BF16 => CudaData::BF16(device.zeros(len)?),
            DType::F16 => CudaData::F16(device.zeros(len)?),
            DType::U8 => CudaData::U8(device.zeros(len)?),
            DType::I32 => CudaData::I32(device.zeros(len)?),
        };
        Ok(Self { data, len, device: device.clone() })
    }

    /// Copies the host elements `cpu[range]` to a new buffer on `device`.
    pub fn upload(device: &Arc<CudaDevice>, cpu: &CpuStorage, range: Range<usize>) -> Result<Self> {
        if range.end > cpu.len() || range.start > range.end {
            return Err(Error::invalid("to_device", format!("range {range:?} outside {} elements", cpu.len())));
        }
        let len = range.len();
        let data = match cpu {
            CpuStorage::F32(v) => CudaData::F32(device.upload(&v[range])?),
            CpuStorage::BF16(v) => CudaData::BF16(device.upload(bytemuck::cast_slice::<bf16, u16>(&v[range]))?),
            CpuStorage::F16(v) => CudaData::F16(device.upload(bytemuck::cast_slice::<f16, u16>(&v[range]))?),
            CpuStorage::U8(v) => CudaData::U8(device.upload(&v[range])?),
            CpuStorage::I32(v) => CudaData::I32(device.upload(&v[range])?),
        };
        Ok(Self { data, len, device: device.clone() })
    }

    /// Copies elements `range` back to the host (waits for the stream).
    pub fn download(&self, range: Range<usize>) -> Result<CpuStorage> {
        self.check_range("download", &range)?;
        let dev = &self.device;
        Ok(match &self.data {
            CudaData::F32(b) => CpuStorage::F32(dev.download_range(b, range)?),
            CudaData::BF16(b) => {
                CpuStorage::BF16(dev.download_range(b, range)?.into_iter().map(bf16::from_bits).collect())
            }
            CudaData::F16(b) => {
                CpuStorage::F16(dev.download_range(b, range)?.into_iter().map(f16::from_bits).collect())
            }
            CudaData::U8(b) => CpuStorage::U8(dev.download_range(b, range)?),
            CudaData::I32(b) => CpuStorage::I32(dev.download_range(b, range)?),
        })
    }

    /// A new buffer holding a device-to-device copy of elements `range`.
    pub fn copy_range(&self, range: Range<usize>) -> Result<Self> {
        self.check_range("copy", &range)?;
        let mut out = Self::zeros(&self.device, self.dtype(), range.len())?;
        let dev = &self.device;
        match (&self.data, &mut out.data) {
            (CudaData::F32(s), CudaData::F32(d)) => dev.copy_range(s, range, d)?,
            (CudaData::BF16(s), CudaData::BF16(d)) | (CudaData::F16(s), CudaData::F16(d)) => {
                dev.copy_range(s, range, d)?
            }
            (CudaData::U8(s), CudaData::U8(d)) => dev.copy_range(s, range, d)?,
            (CudaData::I32(s), CudaData::I32(d)) => dev.copy_range(s, range, d)?,
            _ => return Err(derr("copy", "dtype changed")),
        }
        Ok(out)
    }

    /// The device address of element `i` (which may be one past the end), for a kernel's
    /// parameter struct. The storage must outlive every launch that reads or writes through it;
    /// all work of a device is on its one stream, and buffers are freed stream-ordered.
    pub fn ptr_at(&self, i: usize) -> u64 {
        let base = with_cuda_data!(&self.data, b => self.device.ptr(b));
        base + (i * self.dtype().size_in_bytes()) as u64
    }

    /// Bytes per element.
    pub fn elem_bytes(&self) -> usize {
        self.dtype().size_in_bytes()
    }

    fn check_range(&self, op: &str, range: &Range<usize>) -> Result<()> {
        if range.end > self.len || range.start > range.end {
            return Err(derr(op, format!("range {range:?} outside {} elements", self.len)));
        }
        Ok(())
    }
}
