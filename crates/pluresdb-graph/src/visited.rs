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

    /// Marks every slot of `slots` and writes to `new` the positions in `slots` of those not
    /// marked before (a repeat counts once); returns how many. Positions are bytes, so
    /// `slots` holds at most 256; `new` must be at least as long as `slots`. Without a branch
    /// per slot: on a walk's frontier whether a neighbour is new is unpredictable.
    ///
    /// Two passes: the first only reads, listing the slots not marked yet; the second marks
    /// those (and drops a repeat). Marking as it reads made each read wait for the write
    /// before it whenever both hit one word, which a sorted neighbour list does often.
    #[inline]
    pub(crate) fn insert_each(&mut self, slots: &[u32], new: &mut [u8]) -> usize {
        let mut unmarked = 0;
        for (j, &i) in slots.iter().enumerate() {
            new[unmarked] = j as u8;
            unmarked += usize::from(!self.contains(i));
        }
        let mut n = 0;
        for k in 0..unmarked {
            let j = new[k];
            new[n] = j;
            n += usize::from(self.insert(slots[j as usize]));
        }
        n
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

    #[test]
    fn insert_each_reports_the_slots_not_marked_before_once() {
        let mut b = Bits::new(200);
        b.insert(7);
        b.insert(130);
        let slots = [7, 3, 130, 3, 64, 199, 64, 0, 7];
        let mut new = [0u8; 16];
        let n = b.insert_each(&slots, &mut new);
        // 3, 64, 199 and 0 were new; their repeats and 7 and 130 were not.
        assert_eq!(&new[..n], &[1, 4, 5, 7]);
        assert_eq!(b.iter().collect::<Vec<_>>(), [0, 3, 7, 64, 130, 199]);
        assert_eq!(b.insert_each(&slots, &mut new), 0);
    }
}
