//! How much adfit will read from one input, and reading under that bound.
//!
//! Every reader of outside bytes (NIfTI, tables, safetensors, `.vol`, JSON, vocabularies,
//! checkpoints) goes through here. Two rules:
//! - no buffer is sized from a number a file *claims* (a header's dimensions, a length prefix)
//!   before the bytes that back it are known to exist; buffers grow as data really arrive;
//! - no single input may exceed the cap ([`max_input_bytes`]: 4 GiB unless `--max-input` or
//!   `ADFIT_MAX_INPUT` says otherwise), so a gzip bomb or a lying header ends in an error that
//!   names the file, never in "memory allocation failed" and an abort.
//!
//! Allocations whose size follows from such data go through `try_reserve`, so even a size within
//! the cap that this machine cannot hold is an error, not an abort.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The cap when neither `--max-input` nor `ADFIT_MAX_INPUT` is given.
pub const DEFAULT_MAX_INPUT: u64 = 4 << 30;

/// 0 = not set yet (read `ADFIT_MAX_INPUT` on first use).
static MAX_INPUT: AtomicU64 = AtomicU64::new(0);

/// The largest number of bytes adfit reads from one input (decompressed, for gzip).
pub fn max_input_bytes() -> u64 {
    match MAX_INPUT.load(Ordering::Relaxed) {
        0 => {
            let from_env = std::env::var("ADFIT_MAX_INPUT").ok().and_then(|s| parse_size(&s).ok());
            let v = from_env.unwrap_or(DEFAULT_MAX_INPUT);
            MAX_INPUT.store(v, Ordering::Relaxed);
            v
        }
        v => v,
    }
}

/// Set the cap for this process (`--max-input`).
pub fn set_max_input_bytes(bytes: u64) {
    MAX_INPUT.store(bytes.max(1), Ordering::Relaxed);
}

/// `123`, `64K`, `512M`, `4G` (or `KiB`/`MiB`/`GiB`; powers of 1024) → bytes.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let num: u64 = num.parse().map_err(|_| format!("{s:?} is not a size (e.g. 512M, 4G)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M, G or T)")),
    };
    num.checked_shl(shift).filter(|v| v >> shift == num && *v > 0).ok_or_else(|| format!("{s:?} is out of range"))
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{b} bytes"),
    }
}

/// The error for an input beyond the cap.
pub fn too_large(path: &Path, what: &str, bytes: u64) -> Error {
    too_large_than(path, what, bytes, max_input_bytes())
}

fn too_large_than(path: &Path, what: &str, bytes: u64, max_input: u64) -> Error {
    Error::Limit {
        path: path.into(),
        reason: format!(
            "{what} of {} is more than adfit reads from one input ({}); raise it with --max-input or \
             ADFIT_MAX_INPUT if the file is genuine",
            human(bytes),
            human(max_input)
        ),
    }
}

/// Refuse `bytes` of `what` from `path` when they exceed the cap.
pub fn check(path: &Path, what: &str, bytes: u64) -> Result<()> {
    if bytes > max_input_bytes() {
        return Err(too_large(path, what, bytes));
    }
    Ok(())
}

/// The length of the file at `path`, refused when it is larger than the cap.
pub fn check_file(path: &Path, what: &str) -> Result<u64> {
    let len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    check(path, what, len)?;
    Ok(len)
}

/// A zero-filled vector of `n` elements, or an error naming `path` when it cannot be allocated.
pub fn try_zeroed<T: Clone + Default>(n: usize, path: &Path) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::Limit {
        path: path.into(),
        reason: format!("cannot allocate {} for its data", human((n * std::mem::size_of::<T>()) as u64)),
    })?;
    v.resize(n, T::default());
    Ok(v)
}

/// At most `limit` bytes of `r` (an error once it would yield more), growing the buffer only as
/// bytes arrive. `what` names the data in errors ("voxel data", "file").
pub fn read_bounded(r: &mut dyn Read, limit: u64, path: &Path, what: &str) -> Result<Vec<u8>> {
    read_under(r, limit, max_input_bytes(), path, what)
}

fn read_under(r: &mut dyn Read, limit: u64, max_input: u64, path: &Path, what: &str) -> Result<Vec<u8>> {
    let cap = limit.min(max_input);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        if (buf.len() + n) as u64 > cap {
            if cap < limit {
                return Err(too_large_than(path, what, buf.len() as u64 + n as u64, max_input));
            }
            // The caller's own limit: keep exactly `limit` bytes and stop.
            let keep = (cap - buf.len() as u64) as usize;
            grow(&mut buf, keep, path)?;
            buf.extend_from_slice(&chunk[..keep]);
            return Ok(buf);
        }
        grow(&mut buf, n, path)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn grow(buf: &mut Vec<u8>, extra: usize, path: &Path) -> Result<()> {
    if buf.capacity() - buf.len() >= extra {
        return Ok(());
    }
    let want = (buf.len() + extra).max(2 * buf.capacity()).max(1 << 16) - buf.len();
    buf.try_reserve(want).or_else(|_| buf.try_reserve_exact(extra)).map_err(|_| Error::Limit {
        path: path.into(),
        reason: format!("cannot allocate {} to read it", human((buf.len() + extra) as u64)),
    })
}

/// A whole file, refused when it is larger than the cap (checked before reading).
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    check_file(path, "a file")?;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_bounded(&mut f, u64::MAX, path, "a file")
}

/// A whole UTF-8 text file, under the cap; the error names the file.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = read_file(path)?;
    String::from_utf8(bytes).map_err(|e| Error::Limit {
        path: path.into(),
        reason: format!("not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size(" 2 m").unwrap(), 2 << 20);
        assert!(parse_size("0").is_err());
        assert!(parse_size("5Q").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn bounded_reads_stop_at_the_callers_limit_and_fail_past_the_cap() {
        let p = Path::new("x.bin");
        let data = vec![7u8; 300_000];
        assert_eq!(read_bounded(&mut &data[..], 1000, p, "data").unwrap().len(), 1000);
        assert_eq!(read_bounded(&mut &data[..], u64::MAX, p, "data").unwrap().len(), 300_000);
        // An endless stream (a gzip bomb's shape) under a caller limit above the cap.
        let err = read_under(&mut std::io::repeat(0), u64::MAX, 100_000, p, "voxel data").unwrap_err().to_string();
        assert!(err.contains("x.bin") && err.contains("--max-input"), "{err}");
    }
}
