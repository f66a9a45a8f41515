//! Exact (brute-force) k-nearest search over vectors streamed in one at a time: for small or
//! heavily filtered sets, and as ground truth.

use std::collections::BinaryHeap;

use crate::VectorError;
use crate::distance::{Kernels, Metric, normalize};
use crate::hnsw::{Neighbor, Scored};

/// Keeps the `k` vectors nearest to a query among those offered.
pub struct ExactSearch {
    metric: Metric,
    kernels: Kernels,
    query: Vec<f32>,
    k: usize,
    top: BinaryHeap<Scored<i64>>,
}

impl ExactSearch {
    /// A search for the `k` nearest to `query`.
    pub fn new(metric: Metric, query: &[f32], k: usize) -> Result<ExactSearch, VectorError> {
        if k == 0 {
            return Err(VectorError::Invalid("k must be at least 1".into()));
        }
        if let Some(index) = query.iter().position(|x| !x.is_finite()) {
            return Err(VectorError::NotFinite { index });
        }
        let mut query = query.to_vec();
        if metric == Metric::Cosine {
            normalize(&mut query)?;
        }
        Ok(ExactSearch {
            metric,
            kernels: Kernels::detect(),
            query,
            k,
            top: BinaryHeap::with_capacity(k.min(1 << 16) + 1),
        })
    }

    /// Considers one vector; vectors of another dimension (or zero vectors, for cosine) are
    /// refused.
    pub fn offer(&mut self, label: i64, v: &[f32]) -> Result<(), VectorError> {
        if v.len() != self.query.len() {
            return Err(VectorError::Dimension {
                expected: self.query.len(),
                got: v.len(),
            });
        }
        let d = match self.metric {
            Metric::L2 => (self.kernels.l2)(&self.query, v),
            Metric::InnerProduct => 1.0 - (self.kernels.dot)(&self.query, v),
            Metric::Cosine => {
                let norm = (self.kernels.dot)(v, v).sqrt();
                if norm.is_normal() {
                    1.0 - (self.kernels.dot)(&self.query, v) / norm
                } else {
                    // Components so large or small that the f32 sum of squares overflows or
                    // underflows: normalize a copy in f64 (zero vectors stay refused).
                    let mut unit = v.to_vec();
                    normalize(&mut unit)?;
                    1.0 - (self.kernels.dot)(&self.query, &unit)
                }
            }
        };
        if self.top.len() < self.k {
            self.top.push(Scored { d, item: label });
        } else if self.top.peek().is_some_and(|t| d < t.d) {
            self.top.pop();
            self.top.push(Scored { d, item: label });
        }
        Ok(())
    }

    /// The nearest vectors offered, closest first.
    pub fn finish(self) -> Vec<Neighbor> {
        let metric = self.metric;
        self.top
            .into_sorted_vec()
            .into_iter()
            .map(|s| Neighbor {
                label: s.item,
                distance: if metric == Metric::L2 {
                    s.d.max(0.0).sqrt()
                } else {
                    s.d
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_search_ranks_and_reports_like_the_index() {
        let mut s = ExactSearch::new(Metric::L2, &[0.0, 0.0], 2).unwrap();
        for (label, v) in [(1, [3.0, 4.0]), (2, [1.0, 0.0]), (3, [0.0, 2.0])] {
            s.offer(label, &v).unwrap();
        }
        assert!(s.offer(9, &[1.0]).is_err());
        let got = s.finish();
        assert_eq!(got.iter().map(|n| n.label).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(got[1].distance, 2.0);
        let mut s = ExactSearch::new(Metric::Cosine, &[0.0, 5.0], 1).unwrap();
        s.offer(1, &[3.0, 3.0]).unwrap();
        s.offer(2, &[0.0, 0.1]).unwrap();
        assert_eq!(s.offer(3, &[0.0, 0.0]), Err(VectorError::ZeroVector));
        assert_eq!(s.finish()[0].label, 2);
        assert!(ExactSearch::new(Metric::L2, &[1.0], 0).is_err());
        // Components whose squares overflow or underflow f32 still have a direction.
        let mut s = ExactSearch::new(Metric::Cosine, &[1e30, 1e30], 3).unwrap();
        s.offer(1, &[1.0, 0.0]).unwrap();
        s.offer(2, &[1e30, 1e30]).unwrap();
        s.offer(3, &[1e-30, 1e-30]).unwrap();
        let got = s.finish();
        assert_eq!(
            got.iter().map(|n| n.label).collect::<Vec<_>>(),
            vec![2, 3, 1]
        );
        assert!(got[0].distance.abs() < 1e-6 && got[1].distance.abs() < 1e-6);
    }
}
