//! Node ids by index, kept in shared chunks so a query result can hold a snapshot of them.

use std::sync::Arc;

/// Slots per chunk.
const CHUNK: usize = 1024;

/// The id of every node slot (`None` for a free slot), in chunks of 1024 behind reference
/// counts. Cloning copies one pointer per chunk, so a query result can keep the ids of
/// everything it reached without copying a string ([`Graph::ids`](crate::Graph::ids)); a
/// later change to the graph copies just the chunk it changes, and only while a snapshot
/// still shares it.
#[derive(Clone, Debug, Default)]
pub struct Ids {
    chunks: Vec<Arc<Vec<Option<Arc<str>>>>>,
}

impl Ids {
    /// The id of node `v`, if it was live when the snapshot was taken.
    #[inline]
    pub fn get(&self, v: u32) -> Option<&str> {
        let v = v as usize;
        self.chunks.get(v / CHUNK)?.get(v % CHUNK)?.as_deref()
    }

    /// Adds a free slot at the end.
    pub(crate) fn push_free(&mut self) {
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        let last = self.chunks.last_mut().expect("a chunk was just ensured");
        Arc::make_mut(last).push(None);
    }

    /// Sets slot `v` (which must exist); returns what it held.
    pub(crate) fn set(&mut self, v: u32, id: Option<Arc<str>>) -> Option<Arc<str>> {
        let v = v as usize;
        let chunk = Arc::make_mut(&mut self.chunks[v / CHUNK]);
        std::mem::replace(&mut chunk[v % CHUNK], id)
    }

    /// Every live id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<str>> + '_ {
        self.chunks.iter().flat_map(|c| c.iter().flatten())
    }

    /// Bytes of heap memory held (strings included).
    pub(crate) fn memory_bytes(&self) -> usize {
        let strings: usize = self
            .iter()
            .map(|id| id.len() + 2 * std::mem::size_of::<usize>())
            .sum();
        strings
            + self.chunks.capacity() * std::mem::size_of::<usize>()
            + self.chunks.len() * CHUNK * std::mem::size_of::<Option<Arc<str>>>()
    }

    /// Gives spare memory back.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.chunks.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_keeps_the_ids_it_saw() {
        let mut ids = Ids::default();
        for i in 0..2500u32 {
            ids.push_free();
            ids.set(i, Some(format!("n{i}").into()));
        }
        let snapshot = ids.clone();
        assert_eq!(ids.set(5, None).as_deref(), Some("n5"));
        ids.set(2400, Some("renamed".into()));
        assert_eq!(ids.get(5), None);
        assert_eq!(ids.get(2400), Some("renamed"));
        assert_eq!(snapshot.get(5), Some("n5"));
        assert_eq!(snapshot.get(2400), Some("n2400"));
        assert_eq!(snapshot.get(2500), None);
        // Untouched chunks are still shared.
        assert!(Arc::ptr_eq(&ids.chunks[1], &snapshot.chunks[1]));
        assert!(!Arc::ptr_eq(&ids.chunks[0], &snapshot.chunks[0]));
        assert_eq!(ids.iter().count(), 2499);
    }
}
