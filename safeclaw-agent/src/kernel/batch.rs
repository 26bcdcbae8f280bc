//! Batched map syscalls (aya has no batch API): `BPF_MAP_UPDATE_BATCH` for runs of array entries and
//! for trie entries, `BPF_MAP_LOOKUP_BATCH` and `BPF_MAP_DELETE_BATCH` to list and remove trie entries.
//! A reload's rules, port intervals and tens of thousands of network prefixes cost a few dozen syscalls
//! instead of one per entry (each also runs the `bpf` LSM program); the automata go through a mapping
//! (`mapped`) and come here only when their map cannot be mapped.
use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};

use aya::maps::lpm_trie::Key;
use aya::maps::Map;
use aya::Ebpf;

use super::KernelError;

/// `enum bpf_cmd` values (Linux 5.6 for hash and LPM trie maps, array maps since 5.10).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// Elements per call: bounds the kernel's work per syscall and the buffers.
const CHUNK: usize = 1 << 16;
/// Keys listed per call (with their values: about 256 KiB of buffers for the network trie).
const LIST_CHUNK: usize = 1 << 13;

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

/// Runs batch command `cmd`; the number of elements the kernel processed, or its error with it.
///
/// # Safety
/// `attr` must describe live buffers of `count` keys and values of exactly the map's key and value
/// sizes (and `in_batch`/`out_batch` one key each, when set); the kernel reads or writes only those.
unsafe fn batch(cmd: libc::c_long, attr: &mut BatchAttr) -> (u32, Option<std::io::Error>) {
    let result =
        libc::syscall(libc::SYS_bpf, cmd, attr as *mut BatchAttr, std::mem::size_of::<BatchAttr>() as u32);
    (attr.count, (result < 0).then(std::io::Error::last_os_error))
}

/// The descriptor of array map `map`.
pub(super) fn array_fd(ebpf: &Ebpf, map: &'static str) -> Result<RawFd, KernelError> {
    match ebpf.map(map) {
        Some(Map::Array(data)) => Ok(data.fd().as_fd().as_raw_fd()),
        _ => Err(KernelError::Missing { what: "array map", name: map }),
    }
}

/// The descriptor of LPM trie `map`, after checking its keys are `Key<D>` and its values `V`.
fn trie_fd<D: aya::Pod, V: aya::Pod>(ebpf: &Ebpf, map: &'static str) -> Result<RawFd, KernelError> {
    let Some(whole @ Map::LpmTrie(data)) = ebpf.map(map) else {
        return Err(KernelError::Missing { what: "LPM trie", name: map });
    };
    aya::maps::LpmTrie::<&aya::maps::MapData, D, V>::try_from(whole)
        .map_err(|source| KernelError::Map { map, source })?;
    Ok(data.fd().as_fd().as_raw_fd())
}

/// Writes `values` into array map `map` at indices `first..first + values.len()`.
pub fn write_run<V: aya::Pod>(
    ebpf: &Ebpf,
    map: &'static str,
    first: u32,
    values: &[V],
) -> Result<(), KernelError> {
    let fd = array_fd(ebpf, map)?;
    let mut keys: Vec<u32> = Vec::with_capacity(CHUNK.min(values.len()));
    for (chunk_index, chunk) in values.chunks(CHUNK).enumerate() {
        let start = u64::from(first) + (chunk_index * CHUNK) as u64;
        keys.clear();
        for offset in 0..chunk.len() as u64 {
            let index = u32::try_from(start + offset)
                .map_err(|_| KernelError::Limit(format!("index past the end of `{map}`")))?;
            keys.push(index);
        }
        // u32 keys are the array's; `V` its value type, checked by the map's layout at load.
        update_chunk(fd, map, &keys, chunk)?;
    }
    Ok(())
}

/// Inserts (or replaces) `keys[i]` → `values[i]` in LPM trie `map`.
pub fn trie_insert<D: aya::Pod, V: aya::Pod>(
    ebpf: &Ebpf,
    map: &'static str,
    keys: &[Key<D>],
    values: &[V],
) -> Result<(), KernelError> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    let fd = trie_fd::<D, V>(ebpf, map)?;
    for (keys, values) in keys.chunks(CHUNK).zip(values.chunks(CHUNK)) {
        update_chunk(fd, map, keys, values)?;
    }
    Ok(())
}

/// One `BPF_MAP_UPDATE_BATCH` of equally many keys and values, of the map's sizes (checked by the
/// callers).
fn update_chunk<K: aya::Pod, V: aya::Pod>(
    fd: RawFd,
    map: &'static str,
    keys: &[K],
    values: &[V],
) -> Result<(), KernelError> {
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len().min(values.len()) as u32,
        map_fd: fd as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `count` keys and values in live buffers of the map's key and value sizes; the kernel
    // only reads them and writes `attr.count`.
    match unsafe { batch(BPF_MAP_UPDATE_BATCH, &mut attr) } {
        (_, None) => Ok(()),
        (written, Some(error)) => {
            Err(KernelError::Batch { map, op: "update", done: u64::from(written), error })
        }
    }
}

/// Every key of LPM trie `map` (key data `D`, values `V`), listed `LIST_CHUNK` at a time.
pub fn trie_keys<D: aya::Pod, V: aya::Pod>(
    ebpf: &Ebpf,
    map: &'static str,
) -> Result<Vec<Key<D>>, KernelError> {
    let fd = trie_fd::<D, V>(ebpf, map)?;
    let (key_size, value_size) = (std::mem::size_of::<Key<D>>(), std::mem::size_of::<V>());
    let mut key_buf = vec![0u8; LIST_CHUNK * key_size];
    let mut value_buf = vec![0u8; LIST_CHUNK * value_size];
    // Where the previous call stopped (the kernel's cursor is the last key it returned).
    let mut cursor = vec![0u8; key_size];
    let mut next_cursor = vec![0u8; key_size];
    let mut first = true;
    let mut keys = Vec::new();
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { cursor.as_ptr() as u64 },
            out_batch: next_cursor.as_mut_ptr() as u64,
            keys: key_buf.as_mut_ptr() as u64,
            values: value_buf.as_mut_ptr() as u64,
            count: LIST_CHUNK as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: buffers of `LIST_CHUNK` keys and values of the map's sizes (checked by `trie_fd`) and one
        // key for each cursor, all live for the call; the kernel writes at most `count` of each.
        let (listed, error) = unsafe { batch(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        let listed = (listed as usize).min(LIST_CHUNK);
        for bytes in key_buf[..listed * key_size].chunks_exact(key_size) {
            // SAFETY: `bytes` holds one key as the kernel wrote it; `Key<D>` is plain data of that size.
            keys.push(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Key<D>>()) });
        }
        match error {
            // ENOENT: no key after the last one listed.
            Some(error) if error.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
            Some(error) => {
                return Err(KernelError::Batch { map, op: "lookup", done: keys.len() as u64, error })
            }
            None if listed == 0 => return Ok(keys),
            None => {}
        }
        std::mem::swap(&mut cursor, &mut next_cursor);
        first = false;
    }
}

/// Removes `keys` (present) from LPM trie `map` (values `V`).
pub fn trie_remove<D: aya::Pod, V: aya::Pod>(
    ebpf: &Ebpf,
    map: &'static str,
    keys: &[Key<D>],
) -> Result<(), KernelError> {
    let fd = trie_fd::<D, V>(ebpf, map)?;
    for chunk in keys.chunks(CHUNK) {
        let mut attr = BatchAttr {
            keys: chunk.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `count` keys of the map's key size in a live buffer; the kernel only reads them.
        if let (removed, Some(error)) = unsafe { batch(BPF_MAP_DELETE_BATCH, &mut attr) } {
            return Err(KernelError::Batch { map, op: "delete", done: u64::from(removed), error });
        }
    }
    Ok(())
}
