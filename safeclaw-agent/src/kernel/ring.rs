//! Our own consumer of the EVENTS ring buffer: records are read in order but the kernel may reuse
//! their space only once `release_through` says their audit entries are durable, so a daemon killed
//! at any moment leaves every unrecorded event in the (pinned) ring for its successor.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use aya::maps::{Map, MapData};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Set in a record's length while the producer is still writing it.
const BUSY_BIT: u32 = 1 << 31;
/// Set in a record's length when the producer gave the reservation up.
const DISCARD_BIT: u32 = 1 << 30;
/// Length word and page offset in front of every record.
const HEADER_LEN: u64 = 8;

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("the EVENTS map is not a ring buffer")]
    NotARing,
    #[error("cannot read the EVENTS ring buffer's size: {0}")]
    Info(#[source] aya::maps::MapError),
    #[error("the EVENTS ring buffer has {0} bytes: not a power of two of at least one page")]
    Size(u64),
    #[error("cannot map the EVENTS ring buffer's {part}: {source}")]
    Map { part: &'static str, source: std::io::Error },
    #[error("ring buffer record at {position} claims {len} bytes, more than the ring holds ({size})")]
    Corrupt { position: u64, len: u32, size: u64 },
}

/// One record, and the ring position just past it (what `release_through` takes).
pub struct Record<'a> {
    pub data: &'a [u8],
    pub end: u64,
}

/// A shared mapping of part of the map, unmapped on drop.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(
        fd: RawFd,
        len: usize,
        offset: usize,
        writable: bool,
        part: &'static str,
    ) -> Result<Self, RingError> {
        let protection = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        let offset = libc::off_t::try_from(offset).map_err(|_| RingError::Size(offset as u64))?;
        // SAFETY: a fresh shared mapping of a file descriptor; the kernel checks that `len` and `offset`
        // fit the ring buffer map and refuses write access to the producer's pages.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, protection, libc::MAP_SHARED, fd, offset) };
        if base == libc::MAP_FAILED {
            return Err(RingError::Map { part, source: std::io::Error::last_os_error() });
        }
        let base = NonNull::new(base.cast::<u8>())
            .ok_or(RingError::Map { part, source: std::io::Error::other("mmap returned null") })?;
        Ok(Mapping { base, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` are exactly what mmap returned; nothing borrows the mapping any more
        // (records borrow the ring that owns it).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The EVENTS ring as this process consumes it.
pub struct EventRing {
    /// Keeps the map (and so the mappings' object) alive, and is what epoll watches.
    map: MapData,
    /// The consumer page: `consumer_pos` at offset 0, the only thing we write.
    consumer: Mapping,
    /// The producer page followed by the data pages, mapped twice back to back by the kernel so that a
    /// record crossing the end reads as one slice.
    producer: Mapping,
    page: usize,
    size: u64,
    /// Position of the next record to hand out; ahead of `consumer_pos` by what awaits release.
    read_pos: u64,
}

// SAFETY: the mappings belong to this value alone and are only touched through `&mut self` (reads) or
// atomics; moving it to another thread moves that exclusive access along.
unsafe impl Send for EventRing {}

impl EventRing {
    /// Maps the ring; reading starts at what the previous consumer released (a restarted daemon thus
    /// sees every record its predecessor had not released).
    pub fn new(map: Map) -> Result<Self, RingError> {
        let Map::RingBuf(map) = map else { return Err(RingError::NotARing) };
        let size = u64::from(map.info().map_err(RingError::Info)?.max_entries());
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        if !size.is_power_of_two() || size < page as u64 {
            return Err(RingError::Size(size));
        }
        let data_len = usize::try_from(size).map_err(|_| RingError::Size(size))?;
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, 0, true, "consumer page")?;
        let producer = Mapping::new(fd, page + 2 * data_len, page, false, "producer and data pages")?;
        let mut ring = EventRing { map, consumer, producer, page, size, read_pos: 0 };
        ring.read_pos = ring.consumer_pos().load(Ordering::Acquire);
        Ok(ring)
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: offset 0 of the page-aligned consumer page holds the kernel's u64 consumer_pos; the
        // mapping lives as long as `self`.
        unsafe { AtomicU64::from_ptr(self.consumer.base.as_ptr().cast()) }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: offset 0 of the page-aligned producer page holds the kernel's u64 producer_pos; the
        // mapping lives as long as `self`. We only load from it.
        unsafe { AtomicU64::from_ptr(self.producer.base.as_ptr().cast()) }
    }

    /// Address of ring offset `position` in the first copy of the data pages.
    fn at(&self, position: u64) -> *mut u8 {
        let offset = self.page + (position & (self.size - 1)) as usize;
        // SAFETY: offset < page + size, inside the producer mapping (page + 2 * size bytes).
        unsafe { self.producer.base.as_ptr().add(offset) }
    }

    /// The next committed record after those already handed out; `Ok(None)` when there is none yet (or
    /// the oldest one is still being written). Discarded records are skipped.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, RingError> {
        loop {
            let produced = self.producer_pos().load(Ordering::Acquire);
            if self.read_pos >= produced {
                return Ok(None);
            }
            let header = self.at(self.read_pos);
            // SAFETY: records start 8-byte aligned, so the length word is an aligned u32 inside the
            // mapping; the producer writes it with a release store, hence the atomic acquire load.
            let len_word = unsafe { AtomicU32::from_ptr(header.cast::<u32>()) }.load(Ordering::Acquire);
            if len_word & BUSY_BIT != 0 {
                return Ok(None);
            }
            let len = len_word & !(BUSY_BIT | DISCARD_BIT);
            if u64::from(len) + HEADER_LEN > self.size {
                return Err(RingError::Corrupt { position: self.read_pos, len, size: self.size });
            }
            self.read_pos += (u64::from(len) + HEADER_LEN).next_multiple_of(HEADER_LEN);
            if len_word & DISCARD_BIT != 0 {
                continue;
            }
            // SAFETY: the record body follows its header and is at most size - 8 bytes long, so it ends
            // before the second copy of the data pages does; it is committed (not busy) and unreleased,
            // so the kernel does not write it while `self` is borrowed.
            let data = unsafe { std::slice::from_raw_parts(header.add(HEADER_LEN as usize), len as usize) };
            return Ok(Some(Record { data, end: self.read_pos }));
        }
    }

    /// Lets the kernel reuse the space of every record up to `end` (a `Record::end`). Positions behind
    /// the current consumer position or beyond what was read are ignored.
    pub fn release_through(&mut self, end: u64) {
        let current = self.consumer_pos().load(Ordering::Relaxed);
        if end > current && end <= self.read_pos {
            self.consumer_pos().store(end, Ordering::Release);
        }
    }

    /// The ring registered with the async runtime, readable when the kernel signals new records.
    pub fn pollable(self) -> std::io::Result<AsyncFd<EventRing>> {
        // SAFETY: the ring owns its map's fd (through `map`) and keeps it open, unchanged, for as long
        // as it lives, which is as long as the AsyncFd holding it.
        unsafe { AsyncFd::register_with_interest(self, Interest::READABLE) }.map_err(std::io::Error::from)
    }

    /// Bytes of the ring the kernel cannot reuse: every record produced and not yet released, read
    /// or not. When it reaches `size`, the programs deny what they cannot record.
    pub fn occupied(&self) -> u64 {
        let produced = self.producer_pos().load(Ordering::Acquire);
        produced.saturating_sub(self.consumer_pos().load(Ordering::Acquire))
    }

    /// The ring's capacity in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether records were read and not yet released.
    pub fn holds_unreleased(&self) -> bool {
        self.consumer_pos().load(Ordering::Relaxed) < self.read_pos
    }
}

impl AsRawFd for EventRing {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}

impl AsFd for EventRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.fd().as_fd()
    }
}
