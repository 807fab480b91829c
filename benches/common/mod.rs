//! Helpers shared by the benches: memory readings from /proc (Linux), and glibc's malloc
//! thresholds.

/// A `VmXXX:` line of /proc/self/status, in MiB.
fn status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Peak resident memory of this process so far.
#[allow(dead_code)]
pub fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// Resident memory now.
#[allow(dead_code)]
pub fn current_rss_mib() -> f64 {
    status_mib("VmRSS:")
}

/// With `ADFIT_BENCH_MALLOPT` set, raise glibc's mmap and trim thresholds before measuring: Flex
/// allocates every result afresh, and buffers above the mmap threshold otherwise come as fresh
/// pages, each page faulted in.
#[allow(dead_code)]
pub fn raise_malloc_thresholds() {
    if std::env::var("ADFIT_BENCH_MALLOPT").is_ok() {
        raise_malloc_thresholds_now();
    }
}

/// glibc's `mallopt(M_MMAP_THRESHOLD, 32 MiB)` and `mallopt(M_TRIM_THRESHOLD, 1 GiB)`: buffers
/// up to 32 MiB come from the heap and freed memory stays there for the next one.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(dead_code)]
fn raise_malloc_thresholds_now() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    // SAFETY: mallopt only sets glibc's allocator parameters.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
#[allow(dead_code)]
fn raise_malloc_thresholds_now() {
    eprintln!("ADFIT_BENCH_MALLOPT needs glibc; ignored");
}
