//! Writing runs of array map entries with one `BPF_MAP_UPDATE_BATCH` call per chunk (aya has no batch
//! API): a reload of a million DFA transitions costs a few dozen syscalls instead of a million.
use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::Map;
use aya::Ebpf;

use super::KernelError;

/// `enum bpf_cmd` value of `BPF_MAP_UPDATE_BATCH` (Linux 5.6 for hash maps, array maps since 5.10).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
/// Elements per call: bounds the kernel's work per syscall and the key buffer.
const CHUNK: usize = 1 << 16;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Writes `values` into array map `map` at indices `first..first + values.len()`.
pub fn write_run<V: aya::Pod>(
    ebpf: &Ebpf,
    map: &'static str,
    first: u32,
    values: &[V],
) -> Result<(), KernelError> {
    let Some(Map::Array(data)) = ebpf.map(map) else {
        return Err(KernelError::Missing { what: "array map", name: map });
    };
    let fd = data.fd().as_fd().as_raw_fd();
    let mut keys: Vec<u32> = Vec::with_capacity(CHUNK.min(values.len()));
    for (chunk_index, chunk) in values.chunks(CHUNK).enumerate() {
        let start = u64::from(first) + (chunk_index * CHUNK) as u64;
        keys.clear();
        for offset in 0..chunk.len() as u64 {
            let index = u32::try_from(start + offset)
                .map_err(|_| KernelError::Limit(format!("index past the end of `{map}`")))?;
            keys.push(index);
        }
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: chunk.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` describes `count` keys and values in live buffers of exactly that many
        // elements of the map's key (u32) and value (`V`, checked by the map's layout at load) sizes;
        // the kernel only reads them and writes `attr.count`.
        let result = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>() as u32,
            )
        };
        if result < 0 {
            let error = std::io::Error::last_os_error();
            return Err(KernelError::Batch { map, written: u64::from(attr.count), error });
        }
    }
    Ok(())
}
