//! Shared by the bench binaries.

/// This process's RSS in KiB, by the same `/proc` reader the master samples workers with.
pub fn own_rss_kib() -> u64 {
    hsu::internals::sys::read_stat(std::process::id() as i32)
        .map(|s| s.rss_pages * hsu::internals::sys::page_size() / 1024)
        .unwrap_or(0)
}
