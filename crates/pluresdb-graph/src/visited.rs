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

    /// Whether `i` is marked.
    #[inline]
    pub(crate) fn contains(&self, i: u32) -> bool {
        self.0[(i >> 6) as usize] & (1u64 << (i & 63)) != 0
    }

    /// Unmarks everything.
    pub(crate) fn clear(&mut self) {
        self.0.fill(0);
    }

    /// The unmarked slots below `n` among slots `64 w .. 64 w + 64`, as bits (bit `b` is slot
    /// `64 w + b`).
    #[inline]
    pub(crate) fn unset_in_word(&self, w: usize, n: usize) -> u64 {
        let free = !self.0[w];
        if (w + 1) * 64 > n {
            free & ((1u64 << (n % 64)) - 1)
        } else {
            free
        }
    }
}
