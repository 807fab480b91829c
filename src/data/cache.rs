//! The preprocessed-volume cache: one small binary file per scan, read back with a single
//! `read_exact` (no decompression, no parsing), which is what keeps training fed.
//!
//! Layout (little-endian): 8-byte magic `ADFITV1\0`, shape as 3 × u32, a u32 element code
//! (0 = f32), the 4x4 affine as 16 × f64 (row-major), zero padding to 256 bytes, then the voxels
//! as f32 in C order. The affine travels along so a cached volume can be written back as NIfTI
//! and opened in a viewer.

use std::io::Read;
use std::path::Path;

use super::volume::Volume;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"ADFITV1\0";
const HEADER: usize = 256;
/// Refuse shapes beyond this: a corrupt header must not make us allocate gigabytes.
const MAX_VOXELS: u64 = 1 << 28;

/// Write `vol` to `path` atomically.
pub fn write_cached(path: &Path, vol: &Volume) -> Result<()> {
    let mut header = [0u8; HEADER];
    header[..8].copy_from_slice(MAGIC);
    for (a, &s) in vol.shape.iter().enumerate() {
        header[8 + 4 * a..12 + 4 * a].copy_from_slice(&(s as u32).to_le_bytes());
    }
    // bytes 20..24: element code 0 (f32)
    for r in 0..4 {
        for c in 0..4 {
            let at = 24 + 8 * (4 * r + c);
            header[at..at + 8].copy_from_slice(&vol.affine[r][c].to_le_bytes());
        }
    }
    crate::util::write_atomic(path, |w| {
        w.write_all(&header)?;
        if cfg!(target_endian = "little") {
            w.write_all(bytemuck::cast_slice(&vol.data))
        } else {
            for v in &vol.data {
                w.write_all(&v.to_le_bytes())?;
            }
            Ok(())
        }
    })
}

fn parse_header(path: &Path, header: &[u8; HEADER]) -> Result<([usize; 3], [[f64; 4]; 4])> {
    if &header[..8] != MAGIC {
        return Err(Error::volume(path.display().to_string(), "not an adfit cache file (bad magic)"));
    }
    let u32_at = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let shape = [u32_at(8) as usize, u32_at(12) as usize, u32_at(16) as usize];
    // Checked: a corrupt header's sizes can overflow a product.
    let n = shape.iter().try_fold(1u64, |n, &s| n.checked_mul(s as u64)).unwrap_or(u64::MAX);
    if n == 0 || n > MAX_VOXELS || u32_at(20) != 0 {
        return Err(Error::volume(path.display().to_string(), format!("corrupt cache header (shape {shape:?})")));
    }
    let mut affine = [[0.0; 4]; 4];
    for (r, row) in affine.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            let at = 24 + 8 * (4 * r + c);
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            *v = f64::from_le_bytes(b);
        }
    }
    Ok((shape, affine))
}

/// Only the shape, for checking whether a cached file is complete and current.
pub fn cached_shape(path: &Path) -> Result<[usize; 3]> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut header = [0u8; HEADER];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let (shape, _) = parse_header(path, &header)?;
    check_length(path, &f, shape)?;
    Ok(shape)
}

/// The file must hold exactly the voxels its header announces (checked before any allocation).
fn check_length(path: &Path, f: &std::fs::File, shape: [usize; 3]) -> Result<()> {
    let want = HEADER as u64 + 4 * shape.iter().map(|&s| s as u64).product::<u64>();
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if len != want {
        let what = if len < want { "truncated cache file" } else { "cache file too long" };
        return Err(Error::volume(
            path.display().to_string(),
            format!("{what}: {len} bytes, its header asks for {want}; delete it and rerun `adfit preprocess`"),
        ));
    }
    Ok(())
}

/// Read a cached volume.
pub fn read_cached(path: &Path) -> Result<Volume> {
    let _context = crate::panic_context::input(format!("cache volume {}", path.display()));
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut header = [0u8; HEADER];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let (shape, affine) = parse_header(path, &header)?;
    check_length(path, &f, shape)?;
    let n = shape.iter().product::<usize>();
    let mut data = crate::limits::try_zeroed::<f32>(n, path)?;
    f.read_exact(bytemuck::cast_slice_mut(&mut data))
        .map_err(|e| Error::volume(path.display().to_string(), format!("truncated cache file: {e}")))?;
    if cfg!(target_endian = "big") {
        for v in data.iter_mut() {
            *v = f32::from_bits(v.to_bits().swap_bytes());
        }
    }
    Ok(Volume { shape, data, affine })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::volume::identity;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.vol");
        let mut aff = identity();
        aff[0][3] = -90.5;
        let v = Volume::from_fn([3, 4, 5], aff, |i, j, k| (i * 20 + j * 5 + k) as f32 * 0.5);
        write_cached(&p, &v).unwrap();
        assert_eq!(read_cached(&p).unwrap(), v);
        assert_eq!(cached_shape(&p).unwrap(), [3, 4, 5]);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        assert!(cached_shape(&p).is_err());
        let err = read_cached(&p).unwrap_err().to_string();
        assert!(err.contains("truncated") && err.contains("a.vol"), "{err}");
        std::fs::write(&p, [0u8; 300]).unwrap();
        assert!(read_cached(&p).unwrap_err().to_string().contains("bad magic"));
    }
}
