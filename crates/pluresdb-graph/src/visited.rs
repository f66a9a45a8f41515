//! A dense visited set for walks: one bit per node slot.

/// Visited marks for node slots `0..n`; zeroed memory comes cheaply from the allocator.
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    pub(crate) fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    /// Marks `i`; returns true if it was not marked before.
    #[inline]
    pub(crate) fn insert(&mut self, i: u32) -> bool {
        let word = &mut self.0[(i >> 6) as usize];
        let bit = 1u64 << (i & 63);
        let fresh = *word & bit == 0;
        *word |= bit;
        fresh
    }
}
