//! What the machine Panorama runs on does with memory, as far as batch
//! commands need to know: whether its hypervisor takes freed memory back
//! (a virtio balloon reporting free pages), and turning transparent huge
//! pages off for the process when that makes first touches cheaper.
//!
//! On such a host every page a process touches for the first time may have
//! to be backed again by the host. Measured on the CI machine (a
//! Firecracker VM with free page reporting) by touching memory freed a few
//! seconds before: 2 MiB huge pages cost ~3 s per GiB, 4 KiB pages 0.6 s.
//! An incremental refresh spends most of its time loading the stored graph
//! into fresh memory: with huge pages its kernel time was 5-6 s, without
//! 1.2-1.8 s (benches/README.md).

use std::path::Path;

/// Where the kernel lists the virtio balloon devices it drives.
const BALLOON_DEVICES: &str = "/sys/bus/virtio/drivers/virtio_balloon";

/// `VIRTIO_BALLOON_F_REPORTING`: the guest reports free pages to the host,
/// which reclaims them.
const FREE_PAGE_REPORTING: usize = 5;

/// Whether a virtio device's `features` (one `0`/`1` character per
/// feature bit, bit 0 first, as sysfs shows them) include free page
/// reporting.
fn reports_free_pages(features: &str) -> bool {
    features.trim().as_bytes().get(FREE_PAGE_REPORTING) == Some(&b'1')
}

/// Whether the hypervisor takes back the memory this machine frees (a
/// virtio balloon with free page reporting); `false` where that cannot be
/// read (not Linux, no balloon, no sysfs).
pub fn reclaims_freed_memory() -> bool {
    let Ok(devices) = std::fs::read_dir(BALLOON_DEVICES) else {
        return false;
    };
    devices.flatten().any(|d| {
        d.file_name().to_string_lossy().starts_with("virtio")
            && std::fs::read_to_string(Path::new(&d.path()).join("features"))
                .is_ok_and(|f| reports_free_pages(&f))
    })
}

/// Turn transparent huge pages off for this process (`PR_SET_THP_DISABLE`:
/// whatever the allocator advises and the system setting says).
#[cfg(target_os = "linux")]
pub fn avoid_huge_pages() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and
    // changes only this process's memory policy.
    match unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Huge pages are a Linux matter here: nothing to do elsewhere.
#[cfg(not(target_os = "linux"))]
pub fn avoid_huge_pages() -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_page_reporting_is_feature_bit_five() {
        // The CI machine's balloon: bits 1, 2, 5, 7 and 32.
        let ci = "0110010100000000000000000000000010000000000000000000000000000000\n";
        assert!(reports_free_pages(ci));
        // A balloon without reporting (bits 1, 2 only), and a short string.
        assert!(!reports_free_pages("0110000000000000"));
        assert!(!reports_free_pages("01100"));
        assert!(!reports_free_pages(""));
    }

    #[test]
    fn turning_huge_pages_off_takes_effect() {
        avoid_huge_pages().expect("prctl");
        #[cfg(target_os = "linux")]
        {
            // SAFETY: a query of this process's flag, integers only.
            let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
            assert_eq!(disabled, 1);
        }
    }
}
