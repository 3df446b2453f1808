//! The one non-generic `Tensor`: shared storage plus a strided layout. Cloning a tensor clones an
//! `Arc` and a small layout, never the elements. Ops live in `ops/`; this file holds construction,
//! access and views.

use crate::{CpuElement, CpuStorage, DType, Device, Element, Error, Layout, Result, Rng, Shape, Storage};
use std::sync::Arc;

/// An n-dimensional array on some device.
#[derive(Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    layout: Layout,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor[{:?}, {:?}, {:?}]", self.dims(), self.dtype(), self.device())
    }
}

impl Tensor {
    /// A tensor over existing storage with the given layout (checked to stay inside the storage).
    pub fn from_storage(storage: Arc<Storage>, layout: Layout) -> Result<Self> {
        let len = storage.len();
        let n = layout.shape().try_elem_count("from_storage")?;
        if n > 0 {
            // The last element's index; checked, since the layout may come from a file.
            let last = layout
                .shape()
                .dims()
                .iter()
                .zip(layout.strides())
                .try_fold(layout.offset(), |acc, (&d, &s)| (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x)));
            if last.is_none_or(|last| last >= len) {
                return Err(Error::invalid("from_storage", format!("layout {layout:?} reaches past {len} elements")));
            }
        }
        Ok(Tensor { storage, layout })
    }

    /// A contiguous CPU tensor from a vector.
    pub fn from_vec<T: CpuElement>(data: Vec<T>, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        let expected = shape.try_elem_count("from_vec")?;
        if data.len() != expected {
            return Err(Error::ElementCount { op: "from_vec", len: data.len(), expected, shape });
        }
        Ok(Self::from_cpu(T::wrap(data), shape))
    }

    /// A contiguous CPU tensor copied from a slice.
    pub fn from_slice<T: CpuElement>(data: &[T], shape: impl Into<Shape>) -> Result<Self> {
        Self::from_vec(data.to_vec(), shape)
    }

    /// Wrap CPU storage whose length equals the shape's element count (internal constructor).
    pub(crate) fn from_cpu(storage: CpuStorage, shape: Shape) -> Self {
        debug_assert_eq!(storage.len(), shape.elem_count());
        Tensor { storage: Arc::new(Storage::Cpu(storage)), layout: Layout::contiguous(shape) }
    }

    /// Wrap CUDA storage whose length equals the shape's element count (internal constructor).
    #[cfg(feature = "cuda")]
    pub(crate) fn from_cuda(storage: crate::cuda::CudaStorage, shape: Shape) -> Self {
        debug_assert_eq!(storage.len(), shape.elem_count());
        Tensor { storage: Arc::new(Storage::Cuda(storage)), layout: Layout::contiguous(shape) }
    }

    /// A 0-dim f32 tensor.
    pub fn scalar(v: f32) -> Self {
        Self::from_cpu(CpuStorage::F32(vec![v]), Shape::new(vec![]))
    }

    /// Every element equal to `value` (converted to `dtype`).
    pub fn full(value: f32, shape: impl Into<Shape>, dtype: DType) -> Self {
        let shape = shape.into();
        let n = shape.elem_count();
        let storage = match dtype {
            DType::F32 => CpuStorage::F32(vec![value; n]),
            DType::BF16 => CpuStorage::BF16(vec![half::bf16::from_f32(value); n]),
            DType::F16 => CpuStorage::F16(vec![half::f16::from_f32(value); n]),
            DType::U8 => CpuStorage::U8(vec![value as u8; n]),
            DType::I32 => CpuStorage::I32(vec![value as i32; n]),
        };
        Self::from_cpu(storage, shape)
    }

    /// All zeros.
    pub fn zeros(shape: impl Into<Shape>, dtype: DType) -> Self {
        Self::full(0.0, shape, dtype)
    }

    /// All ones.
    pub fn ones(shape: impl Into<Shape>, dtype: DType) -> Self {
        Self::full(1.0, shape, dtype)
    }

    /// Zeros with this tensor's shape and dtype, on its device (a device allocation can fail,
    /// hence the `Result`; on the CPU it never does).
    pub fn zeros_like(&self) -> Result<Self> {
        match &*self.storage {
            Storage::Cpu(_) => Ok(Self::zeros(self.shape().clone(), self.dtype())),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => crate::cuda::resident::zeros(s.device(), self.dtype(), self.shape().clone()),
        }
    }

    /// f32 samples of `N(0, std²)` from `rng`.
    pub fn randn(shape: impl Into<Shape>, std: f32, rng: &mut Rng) -> Self {
        let shape = shape.into();
        let v = (0..shape.elem_count()).map(|_| rng.normal() * std).collect();
        Self::from_cpu(CpuStorage::F32(v), shape)
    }

    /// f32 samples uniform in `[lo, hi)` from `rng`.
    pub fn rand_uniform(shape: impl Into<Shape>, lo: f32, hi: f32, rng: &mut Rng) -> Self {
        let shape = shape.into();
        let v = (0..shape.elem_count()).map(|_| lo + (hi - lo) * rng.uniform()).collect();
        Self::from_cpu(CpuStorage::F32(v), shape)
    }

    /// `0, 1, …, n-1` as i32.
    pub fn arange(n: usize) -> Self {
        Self::from_cpu(CpuStorage::I32((0..n as i32).collect()), Shape::new(vec![n]))
    }

    // ---- access -------------------------------------------------------------------------------

    /// The shape.
    pub fn shape(&self) -> &Shape {
        self.layout.shape()
    }
    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.layout.shape().dims()
    }
    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.dims().len()
    }
    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.shape().elem_count()
    }
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }
    /// The device holding the elements.
    pub fn device(&self) -> Device {
        self.storage.device()
    }
    /// The strided layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    /// The shared storage (for backends and other crates' kernels).
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }
    /// The f32 elements for writing in place, when this tensor is the only holder of its CPU
    /// storage and covers all of it densely (no other tensor or view can observe the write).
    pub(crate) fn unique_f32_mut(&mut self) -> Option<&mut [f32]> {
        let dense = self.layout.is_contiguous() && self.layout.offset() == 0;
        let n = self.layout.shape().elem_count();
        match Arc::get_mut(&mut self.storage) {
            Some(Storage::Cpu(CpuStorage::F32(v))) if dense && v.len() == n => Some(v.as_mut_slice()),
            _ => None,
        }
    }
    /// True when the elements are dense and row-major.
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }
    /// True when both tensors view the same storage.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// The dims of a rank-`N` tensor, or an error naming `op`.
    pub fn dims_n<const N: usize>(&self, op: &'static str) -> Result<[usize; N]> {
        self.dims()
            .try_into()
            .map_err(|_| Error::invalid(op, format!("expected a rank-{N} tensor, got shape {:?}", self.shape())))
    }

    /// The CPU storage, or an error naming `op` when the tensor lives elsewhere.
    pub fn cpu_storage(&self, op: &'static str) -> Result<&CpuStorage> {
        match &*self.storage {
            Storage::Cpu(s) => Ok(s),
            #[allow(unreachable_patterns)]
            _ => Err(Error::invalid(op, format!("expected a CPU tensor, got one on {:?}", self.device()))),
        }
    }

    /// The elements as a slice, without copying: the tensor must be a contiguous CPU tensor of `T`.
    pub fn as_slice<T: CpuElement>(&self) -> Result<&[T]> {
        let s = self.cpu_storage("as_slice")?;
        let data = T::slice(s).ok_or(Error::DTypeMismatch { op: "as_slice", lhs: self.dtype(), rhs: T::DTYPE })?;
        let range = self.layout.contiguous_range().ok_or_else(|| {
            Error::invalid("as_slice", format!("tensor {:?} is not contiguous; call contiguous() first", self.dims()))
        })?;
        Ok(&data[range])
    }

    /// The elements in row-major order as a new vector of `T` (dtype must match). A tensor on a
    /// GPU is downloaded first.
    pub fn to_vec<T: CpuElement>(&self) -> Result<Vec<T>> {
        #[cfg(feature = "cuda")]
        if let Storage::Cuda(_) = &*self.storage {
            return self.to_device(Device::Cpu)?.to_vec();
        }
        if let Ok(s) = self.as_slice::<T>() {
            return Ok(s.to_vec());
        }
        let s = self.cpu_storage("to_vec")?;
        let data = T::slice(s).ok_or(Error::DTypeMismatch { op: "to_vec", lhs: self.dtype(), rhs: T::DTYPE })?;
        Ok(self.layout.indices().map(|i| data[i]).collect())
    }

    /// The elements in row-major order, widened to f32 whatever the dtype (downloaded first
    /// from a GPU).
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        #[cfg(feature = "cuda")]
        if let Storage::Cuda(_) = &*self.storage {
            return self.to_device(Device::Cpu)?.to_vec_f32();
        }
        if let Ok(s) = self.as_slice::<f32>() {
            return Ok(s.to_vec()); // a memcpy
        }
        let s = self.cpu_storage("to_vec_f32")?;
        Ok(crate::with_cpu_storage!(s, v => match self.layout.contiguous_range() {
            Some(r) => v[r].iter().map(|x| x.to_f32()).collect(),
            None => crate::ops::copy::strided_copy(v, &self.layout).iter().map(|x| x.to_f32()).collect(),
        }))
    }

    /// The single element of a one-element tensor, widened to f32.
    pub fn to_scalar(&self) -> Result<f32> {
        if self.elem_count() != 1 {
            return Err(Error::invalid("to_scalar", format!("tensor of shape {:?} is not a scalar", self.shape())));
        }
        Ok(self.to_vec_f32()?[0])
    }

    // ---- devices ------------------------------------------------------------------------------

    /// The same elements on `device`, contiguous: CPU -> CUDA uploads the elements in row-major
    /// order, CUDA -> CPU downloads them (after a copy kernel if the tensor is a view), CUDA ->
    /// another CUDA device goes through the host. On the same device it is a cheap clone (the
    /// layout is kept). Without feature `cuda`, any CUDA device is `Error::Device`.
    ///
    /// ```
    /// use tensor::{Device, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap();
    /// assert!(x.to_device(Device::Cpu).unwrap().same_storage(&x));
    /// ```
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        self.to_other_device(device)
    }

    #[cfg(not(feature = "cuda"))]
    fn to_other_device(&self, device: Device) -> Result<Tensor> {
        Err(Error::Device(format!("to_device: {device:?} needs the tensor crate built with feature `cuda`")))
    }

    #[cfg(feature = "cuda")]
    fn to_other_device(&self, device: Device) -> Result<Tensor> {
        let t = self.contiguous()?;
        let range = t.layout.contiguous_range().ok_or_else(|| Error::invalid("to_device", "not contiguous"))?;
        match (&*t.storage, device) {
            (Storage::Cpu(s), Device::Cuda(_)) => {
                let dev = crate::cuda::select(device)?;
                Ok(Tensor::from_cuda(crate::cuda::CudaStorage::upload(&dev, s, range)?, t.shape().clone()))
            }
            (Storage::Cuda(s), Device::Cpu) => Ok(Tensor::from_cpu(s.download(range)?, t.shape().clone())),
            (Storage::Cuda(s), Device::Cuda(_)) => {
                let host = Tensor::from_cpu(s.download(range)?, t.shape().clone());
                host.to_device(device)
            }
            (Storage::Cpu(_), Device::Cpu) => Ok(t),
        }
    }

    // ---- views --------------------------------------------------------------------------------

    fn with_layout(&self, layout: Layout) -> Tensor {
        Tensor { storage: self.storage.clone(), layout }
    }

    /// A contiguous tensor with the same elements (no copy if already contiguous).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        #[cfg(feature = "cuda")]
        if let Storage::Cuda(_) = &*self.storage {
            return crate::cuda::resident::materialize(self, "contiguous");
        }
        let s = self.cpu_storage("contiguous")?;
        let storage = crate::with_cpu_storage!(s, v => {
            CpuElement::wrap(crate::ops::copy::strided_copy(v, &self.layout))
        });
        Ok(Tensor::from_cpu(storage, self.shape().clone()))
    }

    /// The same elements with a new shape of equal element count; a view when contiguous.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.try_elem_count("reshape")? != self.elem_count() {
            return Err(Error::ShapeMismatch { op: "reshape", lhs: self.shape().clone(), rhs: shape });
        }
        let t = self.contiguous()?;
        Ok(t.with_layout(t.layout.reshaped(shape)))
    }

    /// Swap dimensions `d0` and `d1` (a view).
    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Tensor> {
        Ok(self.with_layout(self.layout.transpose(d0, d1)?))
    }

    /// Swap the last two dimensions (a view).
    pub fn t(&self) -> Result<Tensor> {
        let r = self.rank();
        if r < 2 {
            return Err(Error::invalid("t", format!("needs rank >= 2, got shape {:?}", self.shape())));
        }
        self.transpose(r - 2, r - 1)
    }

    /// Keep `len` indices of `dim` from `start` (a view).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        Ok(self.with_layout(self.layout.narrow(dim, start, len)?))
    }

    /// View as a larger shape by stretching size-1 dims (stride 0, a view).
    pub fn broadcast_as(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        Ok(self.with_layout(self.layout.broadcast_as(&shape.into())?))
    }

    /// Insert a size-1 dimension at `dim`.
    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        if dim > self.rank() {
            return Err(Error::DimOutOfRange { op: "unsqueeze", dim, shape: self.shape().clone() });
        }
        let mut dims = self.dims().to_vec();
        let mut strides = self.layout.strides().to_vec();
        let stride = if dim < strides.len() { strides[dim].saturating_mul(dims[dim]) } else { 1 };
        dims.insert(dim, 1);
        strides.insert(dim, stride);
        Ok(self.with_layout(Layout::from_parts(Shape::new(dims), strides, self.layout.offset())))
    }

    /// Remove a size-1 dimension at `dim`.
    pub fn squeeze(&self, dim: usize) -> Result<Tensor> {
        if self.shape().dim("squeeze", dim)? != 1 {
            return Err(Error::invalid("squeeze", format!("dim {dim} of shape {:?} is not 1", self.shape())));
        }
        let mut dims = self.dims().to_vec();
        let mut strides = self.layout.strides().to_vec();
        dims.remove(dim);
        strides.remove(dim);
        Ok(self.with_layout(Layout::from_parts(Shape::new(dims), strides, self.layout.offset())))
    }

    /// Collapse to one dimension.
    pub fn flatten_all(&self) -> Result<Tensor> {
        self.reshape(self.elem_count())
    }
}
