//! Memory the process has freed, given back to the operating system once it is idle: glibc keeps
//! freed heap pages mapped, so without this a burst's peak would stay resident for good.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How often at most: releasing walks the whole heap, and an idle moment comes many times a minute.
const EVERY_SECONDS: u64 = 10;

/// Releases freed heap pages (glibc `malloc_trim`), at most once every ten seconds; elsewhere a no-op.
pub fn release_freed() {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now.saturating_sub(last) < EVERY_SECONDS
        || LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel; it takes the allocator's own
    // locks and touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}
