//! Distance metrics and their kernels: a portable version and an AVX2+FMA version chosen at run
//! time. Cosine distance is computed on normalized vectors as `1 - dot`.

use std::str::FromStr;

use crate::VectorError;

/// How vectors are compared. Smaller distances are closer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// `1 - cos(a, b)`: direction only (vectors are normalized on insert).
    Cosine,
    /// Squared Euclidean distance (same order as Euclidean; `distance()` reports the root).
    L2,
    /// `1 - a·b`: for vectors normalized by the caller, or where magnitude matters.
    InnerProduct,
}

impl Metric {
    /// The metric's name as used in SQL and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
            Metric::InnerProduct => "ip",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Metric::Cosine => 0,
            Metric::L2 => 1,
            Metric::InnerProduct => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Metric> {
        match code {
            0 => Some(Metric::Cosine),
            1 => Some(Metric::L2),
            2 => Some(Metric::InnerProduct),
            _ => None,
        }
    }
}

impl FromStr for Metric {
    type Err = VectorError;

    fn from_str(s: &str) -> Result<Metric, VectorError> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" | "cos" => Ok(Metric::Cosine),
            "l2" | "euclidean" => Ok(Metric::L2),
            "ip" | "dot" | "inner_product" | "innerproduct" => Ok(Metric::InnerProduct),
            other => Err(VectorError::Invalid(format!(
                "unknown metric {other:?}; use cosine, l2 (euclidean) or ip (inner product)"
            ))),
        }
    }
}

/// The distance kernels for this CPU.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// Dot product.
    pub dot: fn(&[f32], &[f32]) -> f32,
    /// Squared Euclidean distance.
    pub l2: fn(&[f32], &[f32]) -> f32,
    /// Which implementation was chosen.
    pub name: &'static str,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Kernels {
    /// The fastest kernels this CPU supports (detected once per process).
    pub fn detect() -> Kernels {
        static DETECTED: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(Kernels::probe)
    }

    fn probe() -> Kernels {
        Kernels::available()[0]
    }

    /// Every set of kernels this CPU can run, fastest first (the portable ones last).
    pub fn available() -> Vec<Kernels> {
        let mut all = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                all.push(Kernels {
                    dot: avx512::dot,
                    l2: avx512::l2,
                    name: "avx512f",
                });
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                all.push(Kernels {
                    dot: avx2::dot,
                    l2: avx2::l2,
                    name: "avx2+fma",
                });
            }
        }
        all.push(Kernels::portable());
        all
    }

    /// The portable kernels (no SIMD intrinsics; the compiler may still vectorize).
    pub fn portable() -> Kernels {
        Kernels {
            dot: portable::dot,
            l2: portable::l2,
            name: "portable",
        }
    }

    /// The distance between two (already normalized, for cosine) vectors.
    #[inline]
    pub fn distance(&self, metric: Metric, a: &[f32], b: &[f32]) -> f32 {
        match metric {
            Metric::L2 => (self.l2)(a, b),
            Metric::Cosine | Metric::InnerProduct => 1.0 - (self.dot)(a, b),
        }
    }
}

/// Scales `v` to unit length; errors for the zero vector.
pub fn normalize(v: &mut [f32]) -> Result<(), VectorError> {
    // Summed in f64: an f32 sum of squares overflows for components past about 1e19 and
    // underflows below 1e-19, which took such vectors for zero vectors.
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return Err(VectorError::ZeroVector);
    }
    for x in v.iter_mut() {
        *x = (f64::from(*x) / norm) as f32;
    }
    Ok(())
}

mod portable {
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        sum::<false>(a, b)
    }

    pub fn l2(a: &[f32], b: &[f32]) -> f32 {
        sum::<true>(a, b)
    }

    /// The dot product, or (`L2`) the squared Euclidean distance. Eight independent sums let
    /// the compiler keep several lanes busy.
    fn sum<const L2: bool>(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let term = |x: f32, y: f32| if L2 { (x - y) * (x - y) } else { x * y };
        let mut acc = [0f32; 8];
        let chunks = n / 8;
        for i in 0..chunks {
            for j in 0..8 {
                acc[j] += term(a[i * 8 + j], b[i * 8 + j]);
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for i in chunks * 8..n {
            sum += term(a[i], b[i]);
        }
        sum
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(v, 1);
        let lo = _mm256_castps256_ps128(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// `acc` plus the products (`L2`: the squared differences) of the lanes of `x` and `y`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn step<const L2: bool>(x: __m256, y: __m256, acc: __m256) -> __m256 {
        if L2 {
            let d = _mm256_sub_ps(x, y);
            _mm256_fmadd_ps(d, d, acc)
        } else {
            _mm256_fmadd_ps(x, y, acc)
        }
    }

    /// The dot product, or (`L2`) the squared Euclidean distance.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sum<const L2: bool>(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load reads 8 floats at offsets below `n`, within both slices.
        unsafe {
            while i + 32 <= n {
                for (k, acc) in acc.iter_mut().enumerate() {
                    let x = _mm256_loadu_ps(pa.add(i + 8 * k));
                    let y = _mm256_loadu_ps(pb.add(i + 8 * k));
                    *acc = step::<L2>(x, y, *acc);
                }
                i += 32;
            }
            while i + 8 <= n {
                let (x, y) = (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                acc[0] = step::<L2>(x, y, acc[0]);
                i += 8;
            }
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut sum = hsum(s);
            while i < n {
                let (x, y) = (*pa.add(i), *pb.add(i));
                sum += if L2 { (x - y) * (x - y) } else { x * y };
                i += 1;
            }
            sum
        }
    }

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only selected by `Kernels::available` after checking for AVX2 and FMA.
        unsafe { sum::<false>(a, b) }
    }

    pub fn l2(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: as above.
        unsafe { sum::<true>(a, b) }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Lanes `i..n` of `p` (at most 16), zeros past `n`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_tail(p: *const f32, i: usize, n: usize) -> __m512 {
        let mask: __mmask16 = ((1u32 << (n - i)) - 1) as __mmask16;
        // SAFETY: the mask only reads lanes below `n`, within the slice.
        unsafe { _mm512_maskz_loadu_ps(mask, p.add(i)) }
    }

    /// `acc` plus the products (`L2`: the squared differences) of the lanes of `x` and `y`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn step<const L2: bool>(x: __m512, y: __m512, acc: __m512) -> __m512 {
        if L2 {
            let d = _mm512_sub_ps(x, y);
            _mm512_fmadd_ps(d, d, acc)
        } else {
            _mm512_fmadd_ps(x, y, acc)
        }
    }

    /// The dot product, or (`L2`) the squared Euclidean distance.
    #[target_feature(enable = "avx512f")]
    unsafe fn sum<const L2: bool>(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        // SAFETY: every full load reads 16 floats at offsets below `n`, within both slices.
        unsafe {
            while i + 32 <= n {
                s0 = step::<L2>(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), s0);
                let (x, y) = (
                    _mm512_loadu_ps(pa.add(i + 16)),
                    _mm512_loadu_ps(pb.add(i + 16)),
                );
                s1 = step::<L2>(x, y, s1);
                i += 32;
            }
            while i + 16 <= n {
                s0 = step::<L2>(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), s0);
                i += 16;
            }
            if i < n {
                s1 = step::<L2>(load_tail(pa, i, n), load_tail(pb, i, n), s1);
            }
            _mm512_reduce_add_ps(_mm512_add_ps(s0, s1))
        }
    }

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only selected by `Kernels::available` after checking for AVX-512F.
        unsafe { sum::<false>(a, b) }
    }

    pub fn l2(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: as above.
        unsafe { sum::<true>(a, b) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Equal up to f32 rounding of a sum whose terms add up to `scale` in magnitude (sums
    /// that cancel keep the rounding error of their terms, not of their result).
    fn close(a: f32, b: f32, scale: f32) -> bool {
        (a - b).abs() <= 1e-5 * scale + 1e-3
    }

    proptest! {
        /// Every SIMD kernel this CPU runs agrees with the portable ones for every length
        /// (tails included).
        #[test]
        fn simd_matches_portable(v in proptest::collection::vec((-100f32..100f32, -100f32..100f32), 0..300)) {
            let (a, b): (Vec<f32>, Vec<f32>) = v.into_iter().unzip();
            let slow = Kernels::portable();
            let dot_scale: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
            let l2_scale = (slow.l2)(&a, &b);
            for fast in Kernels::available() {
                prop_assert!(close((fast.dot)(&a, &b), (slow.dot)(&a, &b), dot_scale), "{}", fast.name);
                prop_assert!(close((fast.l2)(&a, &b), l2_scale, l2_scale), "{}", fast.name);
            }
            let exact_dot: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            prop_assert!(close((slow.dot)(&a, &b), exact_dot as f32, dot_scale));
        }
    }

    #[test]
    fn metrics_parse_and_distances_are_right() {
        assert_eq!("Euclidean".parse::<Metric>().unwrap(), Metric::L2);
        assert!(
            "manhattan"
                .parse::<Metric>()
                .unwrap_err()
                .to_string()
                .contains("use cosine, l2")
        );
        let k = Kernels::detect();
        let mut a = vec![3.0, 4.0];
        normalize(&mut a).unwrap();
        assert!(close(a[0], 0.6, 1.0) && close(a[1], 0.8, 1.0));
        assert!(close(k.distance(Metric::Cosine, &a, &a), 0.0, 1.0));
        assert!(close(
            k.distance(Metric::L2, &[0.0, 0.0], &[3.0, 4.0]),
            25.0,
            25.0
        ));
        assert_eq!(normalize(&mut [0.0, 0.0]), Err(VectorError::ZeroVector));
        // Squares past f32's range either way: still a direction.
        for x in [1e30f32, 1e-30] {
            let mut v = vec![x, x];
            normalize(&mut v).unwrap();
            assert!(
                close(v[0], std::f32::consts::FRAC_1_SQRT_2, 1.0),
                "{x}: {v:?}"
            );
        }
    }
}
