//! Layer-0 storage: one fixed-size block of words per slot (links, then the vector), each
//! block starting on a cache line, kept in chunks that never move.
//!
//! Growing allocates one more chunk: nothing is copied (a single vector doubling its capacity
//! would hold the old and the new copy at once, and cache-line alignment rules out `mremap`).
//! Chunk `c` holds `FIRST << c` blocks, so a small index stays small, a large one lives in a
//! few large chunks, and finding a block is a shift and a count of leading zeros. Chunks are
//! allocated untouched (only the blocks in use become resident) and, on Linux, asked to be
//! backed by huge pages: a search touches blocks all over layer 0, and 2 MiB pages save most
//! of its TLB misses.

use std::mem::MaybeUninit;

/// Words per cache line.
pub(crate) const LINE_WORDS: usize = 16;

/// log2 of the blocks in the first chunk.
const FIRST_SHIFT: u32 = 6;

/// One cache line of words.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u32; LINE_WORDS]);

/// Blocks of `stride` words for slots `0..len`.
pub(crate) struct Blocks {
    /// Words per block (a whole number of lines).
    stride: usize,
    /// Chunk `c` holds `FIRST << c` blocks; blocks of slots below `len` are initialized.
    chunks: Vec<Box<[MaybeUninit<Line>]>>,
    len: usize,
}

/// The chunk holding `slot` and the slot's index in it.
#[inline]
fn locate(slot: usize) -> (usize, usize) {
    let x = (slot >> FIRST_SHIFT) + 1;
    let chunk = (usize::BITS - 1 - x.leading_zeros()) as usize;
    let first_slot = ((1 << chunk) - 1) << FIRST_SHIFT;
    (chunk, slot - first_slot)
}

impl Blocks {
    /// No blocks yet, each `stride` words (rounded up to whole lines) when added.
    pub(crate) fn new(stride: usize) -> Blocks {
        Blocks {
            stride: stride.max(1).next_multiple_of(LINE_WORDS),
            chunks: Vec::new(),
            len: 0,
        }
    }

    /// Words per block.
    #[inline]
    pub(crate) fn stride(&self) -> usize {
        self.stride
    }

    /// Number of blocks.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds a zeroed block; returns its slot.
    pub(crate) fn push_zeroed(&mut self) -> u32 {
        let slot = self.len;
        let (chunk, at) = locate(slot);
        let lines = self.stride / LINE_WORDS;
        if chunk == self.chunks.len() {
            let n = (lines << FIRST_SHIFT) << chunk;
            let fresh = Box::<[Line]>::new_uninit_slice(n);
            advise_huge_pages(fresh.as_ptr().cast(), n * size_of::<Line>());
            self.chunks.push(fresh);
        }
        for line in &mut self.chunks[chunk][at * lines..(at + 1) * lines] {
            line.write(Line([0; LINE_WORDS]));
        }
        self.len += 1;
        slot as u32
    }

    /// Start of the block of `slot`.
    ///
    /// # Panics
    /// If `slot` has no block.
    #[inline]
    pub(crate) fn ptr(&self, slot: u32) -> *const u32 {
        let slot = slot as usize;
        assert!(slot < self.len, "layer-0 slot {slot} out of range");
        let (chunk, at) = locate(slot);
        // SAFETY: slots below `len` lie in allocated chunks, so `chunk` exists and the block
        // at `at` lies inside it.
        unsafe {
            let chunk = self.chunks.get_unchecked(chunk);
            chunk.as_ptr().cast::<u32>().add(at * self.stride)
        }
    }

    /// The block of `slot`.
    #[inline]
    pub(crate) fn block(&self, slot: u32) -> &[u32] {
        // SAFETY: `ptr` checked that the block exists; blocks below `len` are initialized
        // (zeroed when added), and a line is `LINE_WORDS` words with no padding.
        unsafe { std::slice::from_raw_parts(self.ptr(slot), self.stride) }
    }

    /// The block of `slot`, to change.
    #[inline]
    pub(crate) fn block_mut(&mut self, slot: u32) -> &mut [u32] {
        let p = self.ptr(slot).cast_mut();
        // SAFETY: as in `block`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(p, self.stride) }
    }

    /// Bytes of the blocks in use (the rest of the last chunk is allocated but untouched).
    pub(crate) fn memory_bytes(&self) -> usize {
        self.len * self.stride * 4 + self.chunks.capacity() * 16
    }
}

/// Asks the kernel to back the whole 2 MiB pages inside `[start, start + bytes)` with huge
/// pages (Linux with transparent huge pages in `madvise` mode, the common default). Only a
/// hint: nothing changes if it is refused.
fn advise_huge_pages(start: *const u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let first = (start as usize).next_multiple_of(HUGE);
        let end = (start as usize + bytes) / HUGE * HUGE;
        if end > first {
            // SAFETY: the range lies inside one live allocation, and MADV_HUGEPAGE only
            // changes how the kernel backs those pages, never their contents.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_zeroed_and_stay_put_as_chunks_are_added() {
        for stride in [1, 16, 49, 400] {
            let mut b = Blocks::new(stride);
            assert_eq!(b.stride() % LINE_WORDS, 0);
            let n = (1 << FIRST_SHIFT) * 7 + 3;
            for i in 0..n {
                assert_eq!(b.push_zeroed() as usize, i);
                assert!(b.block(i as u32).iter().all(|&w| w == 0));
                b.block_mut(i as u32)[0] = i as u32;
            }
            let first = b.ptr(0);
            assert_eq!(b.len(), n);
            assert_eq!(
                b.chunks.len(),
                4,
                "chunks of 1, 2 and 4 times the first, then one more"
            );
            for i in 0..n as u32 {
                assert_eq!(b.ptr(i) as usize % 64, 0);
                assert_eq!(b.block(i)[0], i);
            }
            assert_eq!(b.ptr(0), first, "growing never moves a block");
        }
    }

    #[test]
    fn slots_map_to_consecutive_places_in_doubling_chunks() {
        let mut expected = Vec::new();
        for chunk in 0..5 {
            for at in 0..(1usize << FIRST_SHIFT) << chunk {
                expected.push((chunk, at));
            }
        }
        let got: Vec<_> = (0..expected.len()).map(locate).collect();
        assert_eq!(got, expected);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn a_missing_slot_panics_instead_of_reading_garbage() {
        let mut b = Blocks::new(16);
        b.push_zeroed();
        b.block(1);
    }
}
