//! How much memory a stage held: a figure for the metrics (the update's
//! row) and summaries, where LoRA's saving shows.

/// The process's peak resident memory so far in MB (10⁶ bytes), from
/// Linux's `/proc/self/status` (`VmHWM`); `None` elsewhere. Like the
/// wall-clock figures, it differs between two runs of the same inputs.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0 / 1e6)
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let mb = super::peak_rss_mb().unwrap();
            assert!(mb > 0.1 && mb < 1e6, "{mb}");
        }
    }
}
