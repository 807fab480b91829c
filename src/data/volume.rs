//! An in-memory 3D scalar volume with its voxel-to-world affine.
//!
//! Data are held as `f32` in C order over the *storage* axes (i, j, k) of the file, exactly like
//! nibabel's `img.get_fdata()` array: `data[(i * n1 + j) * n2 + k]`. Image tensors later read the
//! three axes as (D, H, W).

/// A 4x4 affine mapping voxel indices (i, j, k, 1) to world millimetres (RAS+).
pub type Affine = [[f64; 4]; 4];

#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// Size of the three storage axes (i, j, k).
    pub shape: [usize; 3],
    /// Voxel values in C order (k fastest).
    pub data: Vec<f32>,
    pub affine: Affine,
}

impl Volume {
    /// A volume of `shape` filled by `f(i, j, k)`.
    pub fn from_fn(shape: [usize; 3], affine: Affine, mut f: impl FnMut(usize, usize, usize) -> f32) -> Self {
        let mut data = Vec::with_capacity(shape[0] * shape[1] * shape[2]);
        for i in 0..shape[0] {
            for j in 0..shape[1] {
                for k in 0..shape[2] {
                    data.push(f(i, j, k));
                }
            }
        }
        Volume { shape, data, affine }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    #[inline]
    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        (i * self.shape[1] + j) * self.shape[2] + k
    }

    #[inline]
    pub fn get(&self, i: usize, j: usize, k: usize) -> f32 {
        self.data[self.index(i, j, k)]
    }

    /// Voxel sizes in mm: the norms of the affine's first three columns (as nibabel's `zooms`
    /// when the affine comes from the header).
    pub fn voxel_size(&self) -> [f64; 3] {
        let a = &self.affine;
        let mut out = [0.0; 3];
        for (c, o) in out.iter_mut().enumerate() {
            *o = (a[0][c] * a[0][c] + a[1][c] * a[1][c] + a[2][c] * a[2][c]).sqrt();
        }
        out
    }
}

/// The identity affine.
pub fn identity() -> Affine {
    let mut a = [[0.0; 4]; 4];
    for (i, row) in a.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    a
}

/// `a · b` for 4x4 matrices.
pub fn matmul(a: &Affine, b: &Affine) -> Affine {
    let mut out = [[0.0; 4]; 4];
    for i in 0..4 {
        for j in 0..4 {
            out[i][j] = (0..4).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}
