//! The saved form of an index: a header, then per slot its label, level, deleted flag and links,
//! then the vectors, then a checksum. Loading validates every count and link, so damaged bytes
//! give [`VectorError::Corrupt`], never a panic or a broken graph.

use std::collections::HashMap;

use crate::VectorError;
use crate::distance::{Kernels, Metric};
use crate::hnsw::{Hnsw, HnswParams};
use crate::visited::Visited;

const MAGIC: &[u8; 8] = b"PLHNSW\x01\0";
const NONE: u32 = u32::MAX;

/// FNV-1a, 64-bit: enough to notice damage, cheap to compute.
fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h ^= u64::from_le_bytes(w);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], VectorError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| VectorError::Corrupt("it ends early".into()))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, VectorError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, VectorError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, VectorError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

impl Hnsw {
    /// The index as bytes, for [`Hnsw::load`].
    pub fn save(&self) -> Vec<u8> {
        let n = self.labels.len();
        let mut out = Vec::with_capacity(64 + n * (16 + self.stride0() * 4));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        out.push(self.metric.code());
        for v in [
            self.params.m,
            self.params.ef_construction,
            self.params.ef_search,
        ] {
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        out.extend_from_slice(&self.params.seed.to_le_bytes());
        out.extend_from_slice(&self.rng.to_le_bytes());
        out.extend_from_slice(&(n as u32).to_le_bytes());
        out.extend_from_slice(&self.entry.unwrap_or(NONE).to_le_bytes());
        out.push(self.max_level as u8);
        for slot in 0..n as u32 {
            out.extend_from_slice(&self.labels[slot as usize].to_le_bytes());
            let level = self.levels[slot as usize];
            out.push(level);
            out.push(self.deleted[slot as usize] as u8);
            for layer in 0..=level as usize {
                let links = self.links(slot, layer);
                out.extend_from_slice(&(links.len() as u32).to_le_bytes());
                for l in links {
                    out.extend_from_slice(&l.to_le_bytes());
                }
            }
        }
        for slot in 0..n as u32 {
            for x in self.vec_of(slot) {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Reads an index written by [`Hnsw::save`].
    pub fn load(bytes: &[u8]) -> Result<Hnsw, VectorError> {
        let corrupt = |why: &str| VectorError::Corrupt(why.to_string());
        if bytes.len() < MAGIC.len() + 8 || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("it is not a PluresDB vector index (bad header)"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        if checksum(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
            return Err(corrupt("the checksum does not match"));
        }
        let mut r = Reader {
            bytes: body,
            pos: MAGIC.len(),
        };
        let dim = r.u32()? as usize;
        let metric = Metric::from_code(r.u8()?).ok_or_else(|| corrupt("unknown metric"))?;
        let params = HnswParams {
            m: r.u32()? as usize,
            ef_construction: r.u32()? as usize,
            ef_search: r.u32()? as usize,
            seed: r.u64()?,
        }
        // Breadths do not shape the stored graph; older files may hold ones past the bounds.
        .clamp_ef();
        let mut index = Hnsw::new(dim, metric, params).map_err(|e| corrupt(&e.to_string()))?;
        index.rng = r.u64()?;
        let n = r.u32()? as usize;
        // Every slot takes at least 14 bytes, so a huge count in a short file is damage.
        if n > body.len() / 14 {
            return Err(corrupt("the slot count is larger than the data"));
        }
        let entry = r.u32()?;
        index.max_level = r.u8()? as usize;
        index.entry = (entry != NONE).then_some(entry);
        if index.entry.is_some_and(|e| e as usize >= n) || (index.entry.is_none() && n > 0) {
            return Err(corrupt("the entry point is out of range"));
        }
        let stride = params.m + 1;
        index.labels.reserve_exact(n);
        index.levels.reserve_exact(n);
        index.deleted.reserve_exact(n);
        for _ in 0..n {
            index.level0.push_zeroed();
        }
        index.upper.reserve_exact(n);
        let mut slots = HashMap::with_capacity(n);
        for slot in 0..n {
            let label = r.u64()? as i64;
            let level = r.u8()? as usize;
            let deleted = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(corrupt("a deleted flag is not 0 or 1")),
            };
            if level > index.max_level {
                return Err(corrupt("a node is above the top layer"));
            }
            index.labels.push(label);
            index.levels.push(level as u8);
            index.deleted.push(deleted);
            index.upper.push(vec![0; level * stride]);
            for layer in 0..=level {
                let count = r.u32()? as usize;
                let block = if layer == 0 {
                    &mut index.level0.block_mut(slot as u32)[..1 + params.m0()]
                } else {
                    &mut index.upper[slot][(layer - 1) * stride..layer * stride]
                };
                if count >= block.len() {
                    return Err(corrupt("a node has more links than M allows"));
                }
                block[0] = count as u32;
                for i in 0..count {
                    let link = r.u32()?;
                    if link as usize >= n {
                        return Err(corrupt("a link points past the last node"));
                    }
                    block[1 + i] = link;
                }
            }
            if deleted {
                index.free.push(slot as u32);
            } else if slots.insert(label, slot as u32).is_some() {
                return Err(corrupt("a label appears twice"));
            }
        }
        // Links to upper layers must land on nodes that exist there.
        for slot in 0..n as u32 {
            for layer in 1..=index.levels[slot as usize] as usize {
                if index
                    .links(slot, layer)
                    .iter()
                    .any(|&l| (index.levels[l as usize] as usize) < layer)
                {
                    return Err(corrupt(
                        "an upper-layer link points to a node below that layer",
                    ));
                }
            }
        }
        if let Some(e) = index.entry
            && index.levels[e as usize] as usize != index.max_level
        {
            return Err(corrupt("the entry point is not on the top layer"));
        }
        let raw = r.take(
            n.checked_mul(dim * 4)
                .ok_or_else(|| corrupt("the size overflows"))?,
        )?;
        let vector_at = index.vector_at0();
        for (slot, bytes) in raw.chunks_exact(dim * 4).enumerate() {
            for (w, c) in index.level0.block_mut(slot as u32)[vector_at..vector_at + dim]
                .iter_mut()
                .zip(bytes.chunks_exact(4))
            {
                *w = u32::from_le_bytes(c.try_into().expect("4 bytes"));
            }
        }
        if r.pos != body.len() {
            return Err(corrupt("there are extra bytes at the end"));
        }
        index.slots = slots;
        index.kernels = Kernels::detect();
        index.reset_scratch();
        if index.is_empty() {
            index.clear();
        }
        Ok(index)
    }

    fn reset_scratch(&mut self) {
        self.build_visited = Visited::new(self.labels.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Hnsw {
        let mut h = Hnsw::new(
            4,
            Metric::L2,
            HnswParams {
                m: 4,
                ..HnswParams::default()
            },
        )
        .unwrap();
        for i in 0..200i64 {
            let f = i as f32;
            h.insert(i * 7, &[f, f.sin(), f.cos(), (f * 0.1).tan()])
                .unwrap();
        }
        for i in 0..20 {
            h.remove(i * 7 * 3);
        }
        h
    }

    #[test]
    fn breadths_past_the_bound_in_older_files_are_clamped() {
        let h = sample();
        let mut bytes = h.save();
        // ef_construction and ef_search follow the magic, dim, metric and M.
        bytes[17..25].fill(0xff);
        let body = bytes.len() - 8;
        let sum = checksum(&bytes[..body]);
        bytes[body..].copy_from_slice(&sum.to_le_bytes());
        let back = Hnsw::load(&bytes).unwrap();
        assert_eq!(back.params().ef_construction, crate::MAX_EF);
        assert_eq!(back.params().ef_search, crate::MAX_EF);
        let q = [1.0, 0.5, 0.5, 0.1];
        assert_eq!(
            back.search(&q, 10, None, None).unwrap(),
            h.exact_search(&q, 10, None).unwrap()
        );
    }

    #[test]
    fn round_trip_keeps_results_and_state() {
        let h = sample();
        let bytes = h.save();
        let back = Hnsw::load(&bytes).unwrap();
        assert_eq!(back.len(), h.len());
        assert_eq!(back.deleted_count(), h.deleted_count());
        for q in [[1.0, 0.5, 0.5, 0.1], [50.0, -1.0, 1.0, 2.0]] {
            assert_eq!(
                back.search(&q, 10, None, None).unwrap(),
                h.search(&q, 10, None, None).unwrap()
            );
        }
        assert_eq!(back.save(), bytes, "saving again gives the same bytes");
    }

    #[test]
    fn damage_is_reported() {
        let bytes = sample().save();
        let mut flipped = bytes.clone();
        flipped[100] ^= 0x40;
        assert!(
            matches!(Hnsw::load(&flipped), Err(VectorError::Corrupt(m)) if m.contains("checksum"))
        );
        assert!(matches!(
            Hnsw::load(&bytes[..bytes.len() / 2]),
            Err(VectorError::Corrupt(_))
        ));
        assert!(
            matches!(Hnsw::load(b"hello"), Err(VectorError::Corrupt(m)) if m.contains("header"))
        );
    }

    /// A body with a valid checksum but nonsense fields is rejected, not trusted.
    fn with_checksum(mut body: Vec<u8>) -> Vec<u8> {
        let sum = checksum(&body);
        body.extend_from_slice(&sum.to_le_bytes());
        body
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..400), cut in 0usize..2000) {
            let mut body = MAGIC.to_vec();
            body.extend_from_slice(&tail);
            let _ = Hnsw::load(&with_checksum(body));
            let saved = sample().save();
            let mut body = saved[..saved.len() - 8].to_vec();
            let at = cut % body.len();
            if at > MAGIC.len() {
                body[at] = body[at].wrapping_add(1 + (cut % 200) as u8);
                // Either rejected, or (if the change was harmless, e.g. a label) a working index.
                if let Ok(h) = Hnsw::load(&with_checksum(body)) {
                    let _ = h.search(&[1.0, 2.0, 3.0, 4.0], 5, None, None);
                }
            }
        }
    }
}
