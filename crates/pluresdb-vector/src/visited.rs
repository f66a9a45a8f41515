//! A reusable "visited" set for graph walks: marks are epoch numbers, so clearing is O(1).

/// Visited marks for slots `0..n`.
pub(crate) struct Visited {
    marks: Vec<u16>,
    epoch: u16,
}

impl Visited {
    pub(crate) fn new(n: usize) -> Visited {
        Visited {
            marks: vec![0; n],
            epoch: 1,
        }
    }

    /// Starts a new walk over at least `n` slots.
    pub(crate) fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n.next_power_of_two(), 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.epoch = 1;
        }
    }

    /// Hints the CPU to fetch the mark of `i` (checked soon).
    #[inline]
    pub(crate) fn prefetch(&self, i: u32) {
        crate::hnsw::prefetch(self.marks.as_ptr().wrapping_add(i as usize));
    }

    /// Marks `i`; returns true if it was not marked in this walk.
    #[inline]
    pub(crate) fn insert(&mut self, i: u32) -> bool {
        let m = &mut self.marks[i as usize];
        if *m == self.epoch {
            false
        } else {
            *m = self.epoch;
            true
        }
    }
}
