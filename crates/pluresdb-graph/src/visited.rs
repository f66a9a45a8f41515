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

    /// The marked slots, in increasing order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let b = bits.trailing_zeros();
                    bits &= bits - 1;
                    (w * 64) as u32 + b
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Bits;

    #[test]
    fn iter_gives_the_marked_slots_in_order() {
        let mut b = Bits::new(300);
        let marked = [299, 0, 64, 63, 128, 5, 200, 65];
        for i in marked {
            b.insert(i);
        }
        let mut want = marked.to_vec();
        want.sort_unstable();
        assert_eq!(b.iter().collect::<Vec<_>>(), want);
        b.clear();
        assert_eq!(b.iter().count(), 0);
    }
}
