//! NIfTI-1 reading: `.nii`, `.nii.gz`, and `.hdr`/`.img` pairs (optionally gzipped). Writing lives
//! in [`super::nifti_write`] and is re-exported here.
//!
//! The header is parsed by the `nifti` crate (which detects the byte order); everything after
//! that is checked here before it is trusted: dimensions, datatype, data offset, and the number of
//! bytes actually present. Data are read incrementally, so a header that claims a huge volume
//! cannot make us allocate more than the file really holds.
//!
//! The affine follows nibabel's `get_best_affine` ([`super::nifti_affine`]).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use nifti::NiftiHeader;

use super::volume::Volume;
use crate::error::{Error, Result};

use super::nifti_affine::best_affine;
pub use super::nifti_affine::AffineSource;
pub use super::nifti_write::{write_nifti, OutType};

/// No volume we handle comes close to this; a header claiming more is lying or not for us.
const MAX_VOXELS: u64 = 1 << 31;

/// NIfTI datatype codes we read (every integer and float type of NIfTI-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Uint8,
    Int8,
    Int16,
    Uint16,
    Int32,
    Uint32,
    Int64,
    Uint64,
    Float32,
    Float64,
}

impl DataType {
    pub fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            2 => DataType::Uint8,
            256 => DataType::Int8,
            4 => DataType::Int16,
            512 => DataType::Uint16,
            8 => DataType::Int32,
            768 => DataType::Uint32,
            1024 => DataType::Int64,
            1280 => DataType::Uint64,
            16 => DataType::Float32,
            64 => DataType::Float64,
            _ => return None,
        })
    }

    pub fn code(self) -> i16 {
        match self {
            DataType::Uint8 => 2,
            DataType::Int8 => 256,
            DataType::Int16 => 4,
            DataType::Uint16 => 512,
            DataType::Int32 => 8,
            DataType::Uint32 => 768,
            DataType::Int64 => 1024,
            DataType::Uint64 => 1280,
            DataType::Float32 => 16,
            DataType::Float64 => 64,
        }
    }

    pub fn size(self) -> usize {
        match self {
            DataType::Uint8 | DataType::Int8 => 1,
            DataType::Int16 | DataType::Uint16 => 2,
            DataType::Int32 | DataType::Uint32 | DataType::Float32 => 4,
            DataType::Int64 | DataType::Uint64 | DataType::Float64 => 8,
        }
    }

    /// The name numpy gives this type (what `inspect --json` reports).
    pub fn name(self) -> &'static str {
        match self {
            DataType::Uint8 => "uint8",
            DataType::Int8 => "int8",
            DataType::Int16 => "int16",
            DataType::Uint16 => "uint16",
            DataType::Int32 => "int32",
            DataType::Uint32 => "uint32",
            DataType::Int64 => "int64",
            DataType::Uint64 => "uint64",
            DataType::Float32 => "float32",
            DataType::Float64 => "float64",
        }
    }
}

fn datatype_name(code: i16) -> &'static str {
    match code {
        0 => "unknown (0)",
        1 => "binary",
        32 => "complex64",
        128 => "rgb24",
        1536 => "float128",
        1792 => "complex128",
        2048 => "complex256",
        2304 => "rgba32",
        _ => "not a NIfTI datatype",
    }
}

/// Summary statistics over the scaled data, computed in f64 before any cast to f32.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Stats {
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std: f64,
    pub sum: f64,
}

impl Stats {
    /// Two-pass statistics (population std, ddof 0) over f64 values.
    pub fn of(values: impl Iterator<Item = f64> + Clone) -> Stats {
        let (mut n, mut sum, mut min, mut max) = (0usize, 0.0f64, f64::INFINITY, f64::NEG_INFINITY);
        for v in values.clone() {
            n += 1;
            sum += v;
            min = min.min(v);
            max = max.max(v);
        }
        let mean = sum / n.max(1) as f64;
        let var = values.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n.max(1) as f64;
        Stats { min, max, mean, std: var.sqrt(), sum }
    }
}

/// What the header said, kept beside the volume for `inspect`.
#[derive(Debug, Clone)]
pub struct NiftiInfo {
    pub datatype: DataType,
    /// `(scl_slope, scl_inter)` as applied; `None` when the header asks for no scaling (a slope
    /// of 0 or NaN), as nibabel reads it.
    pub scaling: Option<(f64, f64)>,
    pub qform_code: i16,
    pub sform_code: i16,
    /// Which of sform, qform or pixdim gave the affine.
    pub affine_source: AffineSource,
}

/// A volume read from disk, with its header facts and f64 statistics of the scaled data.
#[derive(Debug, Clone)]
pub struct NiftiVolume {
    pub volume: Volume,
    pub info: NiftiInfo,
    pub stats: Stats,
}

/// Where the header and the voxel data live.
struct Layout {
    header: PathBuf,
    data: PathBuf,
    pair: bool,
}

fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// `x.hdr[.gz]` ↔ `x.img[.gz]`; anything else is a single file.
fn layout(path: &Path) -> Layout {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    let swap = |from: &str, to: &str| -> Option<PathBuf> {
        lower.strip_suffix(from).map(|_| {
            let stem = &name[..name.len() - from.len()];
            path.with_file_name(format!("{stem}{to}"))
        })
    };
    if let Some(img) = swap(".hdr", ".img").or_else(|| swap(".hdr.gz", ".img.gz")) {
        return Layout { header: path.to_path_buf(), data: img, pair: true };
    }
    if let Some(hdr) = swap(".img", ".hdr").or_else(|| swap(".img.gz", ".hdr.gz")) {
        return Layout { header: hdr, data: path.to_path_buf(), pair: true };
    }
    Layout { header: path.to_path_buf(), data: path.to_path_buf(), pair: false }
}

fn open(path: &Path) -> Result<Box<dyn Read>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = BufReader::with_capacity(1 << 20, file);
    Ok(if is_gz(path) { Box::new(MultiGzDecoder::new(reader)) } else { Box::new(reader) })
}

/// Read a NIfTI-1 volume and scale it (`scl_slope`, `scl_inter`) as nibabel's `get_fdata` does.
pub fn read_nifti(path: &Path) -> Result<NiftiVolume> {
    let _context = crate::panic_context::input(format!("NIfTI {}", path.display()));
    let lay = layout(path);
    let mut reader = open(&lay.header)?;
    let header = NiftiHeader::from_reader(&mut reader).map_err(|e| match e {
        nifti::NiftiError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::nifti(&lay.header, "file ends inside the 348-byte header")
        }
        nifti::NiftiError::Io(io) => Error::io(&lay.header, io),
        other => Error::nifti(&lay.header, other.to_string()),
    })?;
    let bad = |reason: String| Error::nifti(&lay.header, reason);
    if header.sizeof_hdr == 540 || header.sizeof_hdr.swap_bytes() == 540 {
        return Err(bad("NIfTI-2 headers are not supported; convert to NIfTI-1".into()));
    }
    if header.sizeof_hdr != 348 {
        return Err(bad(format!("sizeof_hdr is {}, expected 348", header.sizeof_hdr)));
    }
    let magic_ok = match &header.magic {
        b"n+1\0" => !lay.pair,
        b"ni1\0" => lay.pair,
        _ => false,
    };
    if !magic_ok {
        let expected = if lay.pair { "ni1" } else { "n+1" };
        return Err(bad(format!(
            "magic is {:?}, expected {expected:?} for this file name",
            String::from_utf8_lossy(&header.magic[..3])
        )));
    }

    let shape = shape_of(&header).map_err(&bad)?;
    let datatype = DataType::from_code(header.datatype).ok_or_else(|| {
        bad(format!(
            "datatype {} ({}) is not an integer or float type",
            header.datatype,
            datatype_name(header.datatype)
        ))
    })?;
    let bitpix = datatype.size() as i16 * 8;
    if header.bitpix != bitpix {
        return Err(bad(format!(
            "bitpix {} does not match datatype {} ({} bits)",
            header.bitpix,
            datatype.name(),
            bitpix
        )));
    }
    let (affine, affine_source) = best_affine(&header, shape).map_err(&bad)?;
    let scaling = scaling(&header).map_err(&bad)?;
    let (scl_slope, scl_inter) = scaling.unwrap_or((1.0, 0.0));

    // Position the reader at the first voxel.
    let offset = header.vox_offset;
    if !offset.is_finite() || offset < 0.0 || offset.fract() != 0.0 || offset > 1e9 {
        return Err(bad(format!("vox_offset {offset} is not a valid byte offset")));
    }
    let offset = offset as u64;
    let mut data_reader = if lay.pair {
        if !lay.data.exists() {
            return Err(Error::nifti(&lay.data, "image file of the .hdr/.img pair is missing"));
        }
        let mut r = open(&lay.data)?;
        skip(&mut r, offset, &lay.data)?;
        r
    } else {
        if offset < 352 {
            return Err(bad(format!("vox_offset {offset} lies inside the header (must be ≥ 352)")));
        }
        skip(&mut reader, offset - 348, &lay.header)?;
        reader
    };

    let n = shape.iter().product::<usize>();
    let want = (n * datatype.size()) as u64;
    // File-size check first when we can (uncompressed), so a lying header fails fast.
    if !is_gz(&lay.data) {
        if let Ok(meta) = std::fs::metadata(&lay.data) {
            let start = if lay.pair { offset } else { offset };
            if meta.len() < start + want {
                return Err(Error::nifti(
                    &lay.data,
                    format!(
                        "truncated: header promises {want} bytes of voxel data from byte {start}, file has {}",
                        meta.len()
                    ),
                ));
            }
        }
    }
    // Decompression stops at what the header justifies, and never passes the input cap.
    crate::limits::check(&lay.data, "the voxel data its header asks for", want)?;
    let raw = crate::limits::read_bounded(&mut data_reader, want, &lay.data, "voxel data").map_err(|e| match e {
        Error::Io { source, .. } => Error::nifti(&lay.data, format!("cannot read voxel data: {source}")),
        other => other,
    })?;
    if (raw.len() as u64) < want {
        return Err(Error::nifti(
            &lay.data,
            format!("truncated: header promises {want} bytes of voxel data, found {}", raw.len()),
        ));
    }
    if is_gz(&lay.data) {
        // A gzip member's CRC-32 and length sit after its data: read to the end of the stream
        // so that flate2 checks them, and a corrupted file is an error rather than bad voxels.
        // What follows the voxels is inflated to nowhere, and only up to the input cap.
        let room = crate::limits::max_input_bytes().saturating_sub(want);
        let trailing = std::io::copy(&mut (&mut data_reader).take(room.saturating_add(1)), &mut std::io::sink())
            .map_err(|e| Error::nifti(&lay.data, format!("corrupt gzip stream (CRC or length check failed): {e}")))?;
        if trailing > room {
            return Err(crate::limits::too_large(&lay.data, "the decompressed file", want + trailing));
        }
    }
    let swap = header.endianness != nifti::Endianness::native();
    let (data, stats) = decode(&raw, datatype, swap, scl_slope, scl_inter, shape, &lay.data)?;
    Ok(NiftiVolume {
        volume: Volume { shape, data, affine },
        info: NiftiInfo {
            datatype,
            scaling,
            qform_code: header.qform_code,
            sform_code: header.sform_code,
            affine_source,
        },
        stats,
    })
}

fn skip(r: &mut dyn Read, n: u64, path: &Path) -> Result<()> {
    let copied = std::io::copy(&mut r.take(n), &mut std::io::sink()).map_err(|e| Error::io(path, e))?;
    if copied < n {
        return Err(Error::nifti(path, format!("file ends before the voxel data offset ({n} bytes)")));
    }
    Ok(())
}

/// The three spatial sizes; a 4th (or higher) dimension is accepted only when it is 1.
fn shape_of(h: &NiftiHeader) -> std::result::Result<[usize; 3], String> {
    let dim: Vec<i16> = h.dim.iter().map(|&d| d as i16).collect();
    let ndim = dim[0];
    if !(1..=7).contains(&ndim) {
        return Err(format!("dim[0] = {ndim}, expected 1..7"));
    }
    let mut shape = [1usize; 3];
    for a in 1..=ndim as usize {
        let d = dim[a];
        if d < 1 {
            return Err(format!("dim[{a}] = {d}, every dimension must be ≥ 1"));
        }
        if a <= 3 {
            shape[a - 1] = d as usize;
        } else if d != 1 {
            return Err(format!("dim[{a}] = {d}: only 3D volumes (or a singleton 4th dimension) are supported"));
        }
    }
    let n: u64 = shape.iter().map(|&s| s as u64).product();
    if n > MAX_VOXELS {
        return Err(format!("{n} voxels is more than the {MAX_VOXELS} we accept"));
    }
    Ok(shape)
}

/// nibabel's slope/intercept rule: a slope of 0 or non-finite means "no scaling".
fn scaling(h: &NiftiHeader) -> std::result::Result<Option<(f64, f64)>, String> {
    let slope = h.scl_slope as f64;
    let inter = h.scl_inter as f64;
    if slope == 0.0 || !slope.is_finite() {
        return Ok(None);
    }
    if !inter.is_finite() {
        return Err(format!("valid scl_slope {slope} but invalid scl_inter {inter}"));
    }
    Ok(Some((slope, inter)))
}

/// Voxel bytes → f32 in C order, with f64 statistics of the scaled values.
///
/// Three tight passes, each monomorphised per datatype and byte order: decode in file order
/// (sum, min, max on the way), a second decode for the variance in f64 (so float64 data keep
/// their precision in the statistics), and a cache-blocked Fortran → C transpose.
fn decode(
    raw: &[u8],
    dt: DataType,
    swap: bool,
    slope: f64,
    inter: f64,
    shape: [usize; 3],
    path: &Path,
) -> Result<(Vec<f32>, Stats)> {
    // Expands `$e` once per (datatype, byte order) with `$read` bound to a decoder closure, so
    // each inner loop is monomorphised and inlined.
    macro_rules! with_reader {
        ($size:ident, $read:ident => $e:expr) => {
            match (dt, swap) {
                (DataType::Uint8, _) => { let $size = 1; let $read = |b: &[u8]| b[0] as f64; $e },
                (DataType::Int8, _) => { let $size = 1; let $read = |b: &[u8]| b[0] as i8 as f64; $e },
                (DataType::Int16, false) => { let $size = 2; let $read = |b: &[u8]| i16::from_ne_bytes([b[0], b[1]]) as f64; $e },
                (DataType::Int16, true) => { let $size = 2; let $read = |b: &[u8]| i16::from_ne_bytes([b[1], b[0]]) as f64; $e },
                (DataType::Uint16, false) => { let $size = 2; let $read = |b: &[u8]| u16::from_ne_bytes([b[0], b[1]]) as f64; $e },
                (DataType::Uint16, true) => { let $size = 2; let $read = |b: &[u8]| u16::from_ne_bytes([b[1], b[0]]) as f64; $e },
                (DataType::Int32, false) => { let $size = 4; let $read = |b: &[u8]| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as f64; $e },
                (DataType::Int32, true) => { let $size = 4; let $read = |b: &[u8]| i32::from_ne_bytes([b[3], b[2], b[1], b[0]]) as f64; $e },
                (DataType::Uint32, false) => { let $size = 4; let $read = |b: &[u8]| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as f64; $e },
                (DataType::Uint32, true) => { let $size = 4; let $read = |b: &[u8]| u32::from_ne_bytes([b[3], b[2], b[1], b[0]]) as f64; $e },
                (DataType::Float32, false) => { let $size = 4; let $read = |b: &[u8]| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as f64; $e },
                (DataType::Float32, true) => { let $size = 4; let $read = |b: &[u8]| f32::from_ne_bytes([b[3], b[2], b[1], b[0]]) as f64; $e },
                (DataType::Int64, false) => { let $size = 8; let $read = |b: &[u8]| i64::from_ne_bytes(eight(b, false)) as f64; $e },
                (DataType::Int64, true) => { let $size = 8; let $read = |b: &[u8]| i64::from_ne_bytes(eight(b, true)) as f64; $e },
                (DataType::Uint64, false) => { let $size = 8; let $read = |b: &[u8]| u64::from_ne_bytes(eight(b, false)) as f64; $e },
                (DataType::Uint64, true) => { let $size = 8; let $read = |b: &[u8]| u64::from_ne_bytes(eight(b, true)) as f64; $e },
                (DataType::Float64, false) => { let $size = 8; let $read = |b: &[u8]| f64::from_ne_bytes(eight(b, false)); $e },
                (DataType::Float64, true) => { let $size = 8; let $read = |b: &[u8]| f64::from_ne_bytes(eight(b, true)); $e },
            }
        };
    }
    let n = raw.len() / dt.size();
    let mut file_order = crate::limits::try_zeroed::<f32>(n, path)?;
    let (sum, min, max) = with_reader!(size, read => {
        let (mut sum, mut min, mut max) = (0.0f64, f64::INFINITY, f64::NEG_INFINITY);
        for (dst, b) in file_order.iter_mut().zip(raw.chunks_exact(size)) {
            let v = read(b) * slope + inter;
            sum += v;
            min = min.min(v);
            max = max.max(v);
            *dst = v as f32;
        }
        (sum, min, max)
    });
    let mean = sum / n.max(1) as f64;
    let var = with_reader!(size, read => {
        raw.chunks_exact(size).map(|b| (read(b) * slope + inter - mean).powi(2)).sum::<f64>()
    }) / n.max(1) as f64;
    let mut data = crate::limits::try_zeroed::<f32>(n, path)?;
    fortran_to_c(&file_order, shape, &mut data);
    Ok((data, Stats { min, max, mean, std: var.sqrt(), sum }))
}

fn eight(b: &[u8], swap: bool) -> [u8; 8] {
    let mut a = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
    if swap {
        a.reverse();
    }
    a
}

/// `src[i + n0·(j + n1·k)]` → `dst[(i·n1 + j)·n2 + k]`, in 32×32 tiles of the (i, k) plane so
/// both sides stay in cache; slabs of 32 `i` values run in parallel.
fn fortran_to_c(src: &[f32], [n0, n1, n2]: [usize; 3], dst: &mut [f32]) {
    use rayon::prelude::*;
    const T: usize = 32;
    dst.par_chunks_mut(T * n1 * n2).enumerate().for_each(|(block, slab)| {
        let i0 = block * T;
        for k0 in (0..n2).step_by(T) {
            for j in 0..n1 {
                for i in i0..(i0 + T).min(n0) {
                    let row = ((i - i0) * n1 + j) * n2;
                    for k in k0..(k0 + T).min(n2) {
                        slab[row + k] = src[i + n0 * (j + n1 * k)];
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::volume::Affine;
    use std::io::Write;

    /// An oblique, reflected affine with anisotropic voxels.
    fn oblique() -> Affine {
        let (s, c) = (0.3f64.sin(), 0.3f64.cos());
        [[-1.2 * c, 0.0, 2.5 * s, 10.0], [0.0, 1.5, 0.0, -20.0], [1.2 * s, 0.0, 2.5 * c, 5.5], [0.0, 0.0, 0.0, 1.0]]
    }

    #[test]
    fn write_read_round_trip_with_sform_and_qform() {
        let dir = tempfile::tempdir().unwrap();
        let vol = Volume::from_fn([4, 5, 6], oblique(), |i, j, k| (i as f32) - 2.0 * j as f32 + 0.25 * k as f32);
        for (name, out) in [
            ("a.nii", OutType::Float32),
            ("b.nii.gz", OutType::Float32),
            ("c.nii", OutType::Int16),
            ("d.nii.gz", OutType::Uint8),
        ] {
            let p = dir.path().join(name);
            write_nifti(&p, &vol, out).unwrap();
            let back = read_nifti(&p).unwrap();
            assert_eq!(back.info.affine_source, AffineSource::Sform);
            for r in 0..4 {
                for c in 0..4 {
                    assert!((back.volume.affine[r][c] - vol.affine[r][c]).abs() < 1e-5, "{name}");
                }
            }
            let expected = |v: f32| match out {
                OutType::Float32 => v,
                OutType::Int16 => v.round(),
                OutType::Uint8 => v.round().clamp(0.0, 255.0),
            };
            assert_eq!(
                back.info.datatype.name(),
                match out {
                    OutType::Float32 => "float32",
                    OutType::Int16 => "int16",
                    OutType::Uint8 => "uint8",
                }
            );
            for (a, b) in back.volume.data.iter().zip(&vol.data) {
                assert_eq!(*a, expected(*b), "{name}");
            }
        }
        // With the sform switched off, the qform alone must give the same affine.
        let p = dir.path().join("a.nii");
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[254..256].copy_from_slice(&0i16.to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        let back = read_nifti(&p).unwrap();
        assert_eq!(back.info.affine_source, AffineSource::Qform);
        for r in 0..3 {
            for c in 0..4 {
                assert!((back.volume.affine[r][c] - vol.affine[r][c]).abs() < 1e-5, "qform [{r}][{c}]");
            }
        }
    }

    #[test]
    fn a_gzip_stream_with_a_wrong_crc_or_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let vol = Volume::from_fn([3, 4, 5], super::super::volume::identity(), |i, j, k| (i + j + k) as f32);
        let p = dir.path().join("v.nii.gz");
        write_nifti(&p, &vol, OutType::Float32).unwrap();
        assert!(read_nifti(&p).is_ok());
        let good = std::fs::read(&p).unwrap();
        // The last 8 bytes of a gzip member: CRC-32, then the length mod 2³².
        for at in [good.len() - 8, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x5a;
            std::fs::write(&p, &bad).unwrap();
            let err = read_nifti(&p).unwrap_err().to_string();
            assert!(err.contains("v.nii.gz") && err.contains("corrupt gzip"), "{err}");
        }
    }

    #[test]
    fn lying_header_fails_fast_without_a_big_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let vol = Volume::from_fn([2, 2, 2], super::super::volume::identity(), |_, _, _| 1.0);
        let p = dir.path().join("liar.nii.gz");
        write_nifti(&p, &vol, OutType::Int16).unwrap();
        // Re-encode with dims claiming 1200³ voxels but only 8 present.
        let mut raw = Vec::new();
        MultiGzDecoder::new(std::fs::File::open(&p).unwrap()).read_to_end(&mut raw).unwrap();
        for (i, d) in [1200i16, 1200, 1200].iter().enumerate() {
            raw[42 + 2 * i..44 + 2 * i].copy_from_slice(&d.to_le_bytes());
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        let err = read_nifti(&p).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }
}
