//! A dense visited set for walks: one bit per node slot.

/// Up to this many slots, [`Bits::insert_each`] marks as it reads: a second pass costs more
/// than it saves on a short list (3 hops out on the benchmark graph: 9.0-9.5 us p50 with two
/// passes for all, 8.4-8.5 us with this).
const SHORT_RUN: usize = 16;

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
    /// Past [`SHORT_RUN`] slots, two passes: the first only reads, listing the slots not
    /// marked yet; the second marks those (and drops a repeat). Marking as it reads made each
    /// read wait for the write before it whenever both hit one word, which a sorted neighbour
    /// list does often.
    #[inline]
    pub(crate) fn insert_each(&mut self, slots: &[u32], new: &mut [u8]) -> usize {
        if slots.len() <= SHORT_RUN {
            let mut n = 0;
            for (j, &i) in slots.iter().enumerate() {
                new[n] = j as u8;
                n += usize::from(self.insert(i));
            }
            return n;
        }
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
    use super::{Bits, SHORT_RUN};

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

    #[test]
    fn insert_each_agrees_with_one_at_a_time_on_long_runs() {
        // Past SHORT_RUN slots the reads and the marks are two passes: same answers.
        let mut seed = 0x9e37_79b9_u64;
        let mut next = |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound) as u32
        };
        for len in [SHORT_RUN + 1, 40, 64] {
            let (mut two, mut one) = (Bits::new(300), Bits::new(300));
            for _ in 0..50 {
                let i = next(300);
                two.insert(i);
                one.insert(i);
            }
            // Sorted runs with repeats, as a neighbour list of several relations gives.
            let mut slots: Vec<u32> = (0..len).map(|_| next(300)).collect();
            slots.sort_unstable();
            let mut new = [0u8; 64];
            let n = two.insert_each(&slots, &mut new);
            let want: Vec<u8> = (0..slots.len())
                .filter(|&j| one.insert(slots[j]))
                .map(|j| j as u8)
                .collect();
            assert_eq!(&new[..n], want.as_slice(), "{len} slots");
            assert_eq!(
                two.iter().collect::<Vec<_>>(),
                one.iter().collect::<Vec<_>>()
            );
        }
    }
}
