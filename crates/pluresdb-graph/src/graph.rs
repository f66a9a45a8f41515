//! The graph: interned nodes, relations and types, and per-node neighbour lists both ways.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::GraphError;
use crate::ids::Ids;
use crate::lists::{List, Lists, node_of, pack, rel_of};

/// A node's index in one [`Graph`]. It stays valid until the node is removed; after that the
/// slot may be reused by another node, so look nodes up again by id after removals.
pub type NodeIx = u32;

/// An interned relation (edge label) of one [`Graph`]. Relations are never forgotten.
pub type RelIx = u32;

/// An interned node type of one [`Graph`]. Types are never forgotten.
pub type TypeIx = u32;

const NO_TYPE: u32 = u32::MAX;

/// Hashes ids and names for the interning maps: foldhash (seeded per map) is several times
/// faster than the standard library's SipHash on short strings, which building the graph and
/// catching it up hash once per node.
type IdHash = foldhash::fast::RandomState;

/// Which way to follow edges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Along edges, from source to target.
    #[default]
    Out,
    /// Against edges, from target to source.
    In,
    /// Both ways.
    Both,
}

impl Direction {
    /// The opposite direction (`Both` stays `Both`).
    pub fn reverse(self) -> Direction {
        match self {
            Direction::Out => Direction::In,
            Direction::In => Direction::Out,
            Direction::Both => Direction::Both,
        }
    }

    #[inline]
    pub(crate) fn has_out(self) -> bool {
        self != Direction::In
    }

    #[inline]
    pub(crate) fn has_in(self) -> bool {
        self != Direction::Out
    }
}

/// Which relations to follow: any, or a set of interned relations.
///
/// Build one by name with [`Graph::rel_filter`] (names the graph does not know match nothing)
/// or from indexes with [`RelFilter::of`]. A filter is resolved against the relations the
/// graph knew when it was made; relations created later are matched only by
/// [`RelFilter::any`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelFilter {
    /// `None` = any relation; otherwise sorted, without duplicates.
    only: Option<Vec<RelIx>>,
}

impl RelFilter {
    /// Every relation.
    pub fn any() -> RelFilter {
        RelFilter { only: None }
    }

    /// No relation at all (walks go nowhere).
    pub fn none() -> RelFilter {
        RelFilter {
            only: Some(Vec::new()),
        }
    }

    /// Exactly one relation.
    pub fn one(rel: RelIx) -> RelFilter {
        RelFilter {
            only: Some(vec![rel]),
        }
    }

    /// These relations (an empty set matches nothing).
    pub fn of(rels: impl IntoIterator<Item = RelIx>) -> RelFilter {
        let mut only: Vec<RelIx> = rels.into_iter().collect();
        only.sort_unstable();
        only.dedup();
        RelFilter { only: Some(only) }
    }

    /// Whether every relation matches.
    pub fn is_any(&self) -> bool {
        self.only.is_none()
    }

    /// Whether relation `rel` matches.
    pub fn matches(&self, rel: RelIx) -> bool {
        match &self.only {
            None => true,
            Some(rs) => rs.binary_search(&rel).is_ok(),
        }
    }

    /// The relations matched, or `None` for any.
    pub fn relations(&self) -> Option<&[RelIx]> {
        self.only.as_deref()
    }

    /// The runs of a sorted list that match.
    #[inline]
    pub(crate) fn split<'a>(&'a self, list: List<'a>) -> impl Iterator<Item = List<'a>> + 'a {
        let (whole, rels): (Option<List<'a>>, &[RelIx]) = match &self.only {
            None => (Some(list), &[]),
            Some(rs) => (None, rs),
        };
        whole
            .into_iter()
            .chain(rels.iter().map(move |&r| list.rel_range(r)))
    }
}

/// A directed edge `from -[rel]-> to` by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeRef {
    /// Source node.
    pub from: NodeIx,
    /// Relation.
    pub rel: RelIx,
    /// Target node.
    pub to: NodeIx,
}

/// One edge seen from one of its endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Neighbor {
    /// The node at the other end.
    pub node: NodeIx,
    /// The edge's relation.
    pub rel: RelIx,
    /// [`Direction::Out`] if the edge leaves the node asked about, [`Direction::In`] if it
    /// arrives there (never `Both`).
    pub dir: Direction,
}

impl Neighbor {
    /// The edge, given the node it was seen from.
    pub fn edge(&self, of: NodeIx) -> EdgeRef {
        match self.dir {
            Direction::In => EdgeRef {
                from: self.node,
                rel: self.rel,
                to: of,
            },
            _ => EdgeRef {
                from: of,
                rel: self.rel,
                to: self.node,
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    /// Known only as an endpoint of edges; dropped when its last edge goes.
    Implicit,
    /// Added with [`Graph::add_node`] (or typed with [`Graph::set_type`]).
    Declared,
}

#[derive(Clone, Copy, Debug)]
struct Meta {
    ty: u32,
    state: State,
}

/// A string interner whose indexes are never reused.
#[derive(Clone, Debug, Default)]
struct Names {
    index: HashMap<Box<str>, u32, IdHash>,
    names: Vec<Box<str>>,
}

impl Names {
    fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&ix) = self.index.get(name) {
            return ix;
        }
        let ix = u32::try_from(self.names.len())
            .ok()
            .filter(|&i| i != u32::MAX)
            .expect("pluresdb-graph: more than 4 billion distinct relation or type names");
        self.names.push(name.into());
        self.index.insert(name.into(), ix);
        ix
    }

    fn memory_bytes(&self) -> usize {
        let strings: usize = self.names.iter().map(|n| 2 * n.len()).sum();
        strings
            + self.names.capacity() * std::mem::size_of::<Box<str>>()
            + self.index.capacity() * (std::mem::size_of::<(Box<str>, u32)>() + 1)
    }
}

/// An in-memory directed multigraph with string node ids and named relations, built for
/// walking.
///
/// * Node ids are interned to dense [`NodeIx`] slots; removed nodes' slots are reused.
/// * Each node has an outgoing and an incoming neighbour list, each sorted by
///   `(relation, neighbour)` and contiguous in one arena per direction, so the neighbours by
///   one relation are one slice (see the `lists` module for the layout).
/// * An edge is identified by `(from, relation, to)`: adding it twice keeps one. Edges of
///   different relations between the same nodes, and self-loops, are allowed.
/// * Edges may name nodes never added with [`Graph::add_node`]: such endpoints exist as
///   *implicit* nodes (no type) and disappear with their last edge. Adding them makes them
///   ordinary (*declared*) nodes, which stay until removed.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    index: HashMap<Arc<str>, NodeIx, IdHash>,
    ids: Ids,
    meta: Vec<Meta>,
    free: Vec<NodeIx>,
    live: usize,
    rels: Names,
    rel_edges: Vec<usize>,
    types: Names,
    /// Each node's outgoing and incoming edges.
    pub(crate) lists: Lists,
    edges: usize,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// A graph of these `(from, relation, to)` edges, built in bulk (see
    /// [`Graph::extend_edges`]). Endpoints are implicit nodes.
    pub fn from_edges<I, A, B, C>(edges: I) -> Graph
    where
        I: IntoIterator<Item = (A, B, C)>,
        A: AsRef<str>,
        B: AsRef<str>,
        C: AsRef<str>,
    {
        let mut g = Graph::new();
        g.extend_edges(edges);
        g
    }

    // ----- nodes -----

    /// Adds node `id` with a type, or sets the type of the existing node (an implicit node
    /// becomes declared). Returns its index.
    pub fn add_node(&mut self, id: &str, node_type: Option<&str>) -> NodeIx {
        let v = self.intern_node(id);
        let ty = node_type.map_or(NO_TYPE, |t| self.types.intern(t));
        self.meta[v as usize] = Meta {
            ty,
            state: State::Declared,
        };
        v
    }

    /// Sets the type of node `id` (and makes an implicit node declared); false if there is no
    /// such node.
    pub fn set_type(&mut self, id: &str, node_type: Option<&str>) -> bool {
        if self.node(id).is_none() {
            return false;
        }
        self.add_node(id, node_type);
        true
    }

    /// Removes node `id` and every edge to or from it; false if there was no such node.
    /// Implicit nodes left without edges go too.
    pub fn remove_node(&mut self, id: &str) -> bool {
        match self.node(id) {
            Some(v) => {
                self.remove_node_ix(v);
                true
            }
            None => false,
        }
    }

    fn remove_node_ix(&mut self, v: NodeIx) {
        let [outs, ins] = self.lists.take(v);
        let mut touched = Vec::with_capacity(outs.len() + ins.len());
        for e in outs {
            let (r, w) = (rel_of(e), node_of(e));
            self.rel_edges[r as usize] -= 1;
            self.edges -= 1;
            if w != v {
                self.lists.remove(w, Direction::In, pack(r, v));
                touched.push(w);
            }
        }
        for e in ins {
            let (r, u) = (rel_of(e), node_of(e));
            if u == v {
                continue; // a self-loop, counted with the outgoing edges
            }
            self.rel_edges[r as usize] -= 1;
            self.edges -= 1;
            self.lists.remove(u, Direction::Out, pack(r, v));
            touched.push(u);
        }
        self.free_slot(v);
        for w in touched {
            self.drop_if_orphan(w);
        }
    }

    /// The index of node `id` (declared or implicit).
    pub fn node(&self, id: &str) -> Option<NodeIx> {
        self.index.get(id).copied()
    }

    /// The indexes of these ids, or an error naming the first unknown one.
    pub fn resolve<S: AsRef<str>>(&self, ids: &[S]) -> Result<Vec<NodeIx>, GraphError> {
        ids.iter()
            .map(|id| {
                let id = id.as_ref();
                self.node(id)
                    .ok_or_else(|| GraphError::UnknownNode(id.to_owned()))
            })
            .collect()
    }

    /// The id of node `v`.
    ///
    /// # Panics
    /// If `v` is not a live node (use [`Graph::get_id`] to check).
    pub fn id(&self, v: NodeIx) -> &str {
        self.get_id(v)
            .unwrap_or_else(|| panic!("pluresdb-graph: node index {v} does not name a live node"))
    }

    /// A snapshot of every node's id, for results that outlive a borrow of the graph: one
    /// reference count per 1024 nodes, no string copied.
    pub fn ids(&self) -> Ids {
        self.ids.clone()
    }

    /// The id of node `v`, if it is live.
    pub fn get_id(&self, v: NodeIx) -> Option<&str> {
        self.ids.get(v)
    }

    /// Whether `v` names a live node.
    #[inline]
    pub fn contains(&self, v: NodeIx) -> bool {
        self.meta
            .get(v as usize)
            .is_some_and(|m| m.state != State::Free)
    }

    /// Whether `v` is a live node that exists only as an edge endpoint.
    pub fn is_implicit(&self, v: NodeIx) -> bool {
        self.meta
            .get(v as usize)
            .is_some_and(|m| m.state == State::Implicit)
    }

    /// The type of node `v`, if it has one.
    pub fn node_type(&self, v: NodeIx) -> Option<&str> {
        self.node_type_ix(v).map(|t| &*self.types.names[t as usize])
    }

    /// The interned type of node `v`, if it has one (cheap to compare in filters).
    #[inline]
    pub fn node_type_ix(&self, v: NodeIx) -> Option<TypeIx> {
        self.meta
            .get(v as usize)
            .filter(|m| m.state != State::Free && m.ty != NO_TYPE)
            .map(|m| m.ty)
    }

    /// The interned index of type `name`, if any node ever had it.
    pub fn type_ix(&self, name: &str) -> Option<TypeIx> {
        self.types.get(name)
    }

    /// The name of an interned type.
    ///
    /// # Panics
    /// If `t` was not interned by this graph.
    pub fn type_name(&self, t: TypeIx) -> &str {
        &self.types.names[t as usize]
    }

    /// Live nodes (declared and implicit).
    pub fn node_count(&self) -> usize {
        self.live
    }

    /// One past the highest node index in use: the length of per-node result vectors such as
    /// [`Graph::pagerank`]'s.
    pub fn node_bound(&self) -> usize {
        self.meta.len()
    }

    /// Every live node, by index.
    pub fn nodes(&self) -> impl Iterator<Item = NodeIx> + '_ {
        self.meta
            .iter()
            .enumerate()
            .filter(|(_, m)| m.state != State::Free)
            .map(|(v, _)| v as NodeIx)
    }

    /// The index of node `id`, creating it as an implicit node if it is new.
    pub fn intern_node(&mut self, id: &str) -> NodeIx {
        if let Some(&v) = self.index.get(id) {
            return v;
        }
        let v = match self.free.pop() {
            Some(v) => v,
            None => {
                let v = u32::try_from(self.meta.len())
                    .ok()
                    .filter(|&v| v != u32::MAX)
                    .expect("pluresdb-graph: more than 4 billion nodes");
                self.meta.push(Meta {
                    ty: NO_TYPE,
                    state: State::Free,
                });
                self.ids.push_free();
                self.lists.ensure_slots(self.meta.len());
                v
            }
        };
        let id: Arc<str> = id.into();
        self.ids.set(v, Some(id.clone()));
        self.index.insert(id, v);
        self.meta[v as usize] = Meta {
            ty: NO_TYPE,
            state: State::Implicit,
        };
        self.live += 1;
        v
    }

    fn free_slot(&mut self, v: NodeIx) {
        if let Some(id) = self.ids.set(v, None) {
            self.index.remove(&*id);
        }
        self.meta[v as usize] = Meta {
            ty: NO_TYPE,
            state: State::Free,
        };
        self.free.push(v);
        self.live -= 1;
    }

    fn drop_if_orphan(&mut self, v: NodeIx) {
        if self.is_implicit(v) && self.list_len(v, Direction::Both) == 0 {
            self.lists.take(v);
            self.free_slot(v);
        }
    }

    // ----- relations -----

    /// The interned index of relation `name`, if any edge ever had it.
    pub fn relation(&self, name: &str) -> Option<RelIx> {
        self.rels.get(name)
    }

    /// The index of relation `name`, interning it if it is new.
    ///
    /// # Panics
    /// Past 2^31 relation names (tens of gigabytes of names).
    pub fn intern_relation(&mut self, name: &str) -> RelIx {
        let r = self.rels.intern(name);
        // A walk's steps keep the relation in 31 bits (the top one holds the direction).
        assert!(r < 1 << 31, "more than 2 billion relation names");
        if self.rel_edges.len() <= r as usize {
            self.rel_edges.resize(r as usize + 1, 0);
        }
        r
    }

    /// The name of an interned relation.
    ///
    /// # Panics
    /// If `r` was not interned by this graph.
    pub fn relation_name(&self, r: RelIx) -> &str {
        &self.rels.names[r as usize]
    }

    /// Every interned relation with its live edge count (relations without edges included).
    pub fn relations(&self) -> impl Iterator<Item = (RelIx, &str, usize)> + '_ {
        self.rels
            .names
            .iter()
            .enumerate()
            .map(|(r, n)| (r as RelIx, &**n, self.rel_edges[r]))
    }

    /// A filter for these relation names. Names the graph does not know match nothing (they
    /// have no edges); an empty list matches nothing; use [`RelFilter::any`] for all.
    pub fn rel_filter<S: AsRef<str>>(&self, names: impl IntoIterator<Item = S>) -> RelFilter {
        RelFilter::of(names.into_iter().filter_map(|n| self.relation(n.as_ref())))
    }

    // ----- edges -----

    /// Adds edge `from -[rel]-> to`, creating unknown endpoints as implicit nodes. Returns
    /// false if the edge was there already.
    pub fn add_edge(&mut self, from: &str, rel: &str, to: &str) -> bool {
        let f = self.intern_node(from);
        let t = self.intern_node(to);
        let r = self.intern_relation(rel);
        self.insert_edge(f, r, t)
    }

    /// Adds edge `from -[rel]-> to` by index (see [`Graph::intern_node`] and
    /// [`Graph::intern_relation`]). Returns false if the edge was there already.
    pub fn add_edge_ix(&mut self, edge: EdgeRef) -> Result<bool, GraphError> {
        self.check_node(edge.from)?;
        self.check_node(edge.to)?;
        self.check_relation(edge.rel)?;
        Ok(self.insert_edge(edge.from, edge.rel, edge.to))
    }

    fn insert_edge(&mut self, f: NodeIx, r: RelIx, t: NodeIx) -> bool {
        if !self.lists.insert(f, Direction::Out, pack(r, t)) {
            return false;
        }
        self.lists.insert(t, Direction::In, pack(r, f));
        self.rel_edges[r as usize] += 1;
        self.edges += 1;
        true
    }

    /// Removes edge `from -[rel]-> to`; false if there was no such edge. Implicit endpoints
    /// left without edges go too.
    pub fn remove_edge(&mut self, from: &str, rel: &str, to: &str) -> bool {
        match (self.node(from), self.relation(rel), self.node(to)) {
            (Some(f), Some(r), Some(t)) => self.remove_edge_ix(EdgeRef {
                from: f,
                rel: r,
                to: t,
            }),
            _ => false,
        }
    }

    /// Removes an edge by index; false if there was no such edge.
    pub fn remove_edge_ix(&mut self, edge: EdgeRef) -> bool {
        let EdgeRef { from, rel, to } = edge;
        if !self.contains(from)
            || !self.contains(to)
            || !self.lists.remove(from, Direction::Out, pack(rel, to))
        {
            return false;
        }
        self.lists.remove(to, Direction::In, pack(rel, from));
        self.rel_edges[rel as usize] -= 1;
        self.edges -= 1;
        self.drop_if_orphan(from);
        if to != from {
            self.drop_if_orphan(to);
        }
        true
    }

    /// Whether edge `from -[rel]-> to` exists.
    pub fn has_edge(&self, edge: EdgeRef) -> bool {
        self.lists
            .contains(edge.from, Direction::Out, pack(edge.rel, edge.to))
    }

    /// Adds many `(from, relation, to)` edges at once; returns how many were new. Unknown
    /// endpoints become implicit nodes.
    ///
    /// When the batch is large compared with the graph (an initial load, a big import), the
    /// neighbour lists are rebuilt in one pass (a counting sort by node, then a sort of each
    /// node's list), which is several times faster than adding edges one by one; small batches
    /// are added one by one.
    pub fn extend_edges<I, A, B, C>(&mut self, edges: I) -> usize
    where
        I: IntoIterator<Item = (A, B, C)>,
        A: AsRef<str>,
        B: AsRef<str>,
        C: AsRef<str>,
    {
        let edges = edges.into_iter();
        let mut batch: Vec<(u32, u32, u32)> = Vec::with_capacity(edges.size_hint().0);
        // Edges often come grouped by source (and by relation): a repeat of the previous one
        // needs no lookup.
        let mut last_from: Option<(A, NodeIx)> = None;
        let mut last_rel: Option<(B, RelIx)> = None;
        for (f, r, t) in edges {
            let fi = match &last_from {
                Some((prev, ix)) if prev.as_ref() == f.as_ref() => *ix,
                _ => self.intern_node(f.as_ref()),
            };
            let ri = match &last_rel {
                Some((prev, ix)) if prev.as_ref() == r.as_ref() => *ix,
                _ => self.intern_relation(r.as_ref()),
            };
            let ti = self.intern_node(t.as_ref());
            batch.push((fi, ri, ti));
            last_from = Some((f, fi));
            last_rel = Some((r, ri));
        }
        self.add_batch(&batch)
    }

    /// [`extend_edges`](Self::extend_edges) by index: `(from, relation, to)` each, as
    /// [`Graph::intern_node`] / [`Graph::add_node`] and [`Graph::intern_relation`] gave them.
    /// Nothing is added if an index was not given by this graph.
    pub fn extend_edges_ix(
        &mut self,
        edges: &[(NodeIx, RelIx, NodeIx)],
    ) -> Result<usize, GraphError> {
        for &(from, rel, to) in edges {
            self.check_node(from)?;
            self.check_node(to)?;
            self.check_relation(rel)?;
        }
        Ok(self.add_batch(edges))
    }

    fn check_relation(&self, rel: RelIx) -> Result<(), GraphError> {
        if rel as usize >= self.rel_edges.len() {
            return Err(GraphError::InvalidArgument(format!(
                "relation index {rel} was not interned by this graph; use Graph::intern_relation"
            )));
        }
        Ok(())
    }

    fn add_batch(&mut self, batch: &[(u32, u32, u32)]) -> usize {
        if batch.len() * 4 < self.edges + self.node_bound() {
            return batch
                .iter()
                .filter(|&&(f, r, t)| self.insert_edge(f, r, t))
                .count();
        }
        let slots = self.meta.len();
        let [added, _] = self.lists.rebuild_with(
            slots,
            batch.iter().flat_map(|&(f, r, t)| {
                [
                    (f, Direction::Out, pack(r, t)),
                    (t, Direction::In, pack(r, f)),
                ]
            }),
        );
        self.edges += added;
        self.rel_edges.iter_mut().for_each(|c| *c = 0);
        for v in 0..slots as u32 {
            for e in self.lists.get(v, Direction::Out).iter() {
                self.rel_edges[rel_of(e) as usize] += 1;
            }
        }
        added
    }

    /// Live edges.
    pub fn edge_count(&self) -> usize {
        self.edges
    }

    /// Every live edge, grouped by source node.
    pub fn edges(&self) -> impl Iterator<Item = EdgeRef> + '_ {
        self.nodes().flat_map(move |v| {
            self.lists
                .get(v, Direction::Out)
                .iter()
                .map(move |e| EdgeRef {
                    from: v,
                    rel: rel_of(e),
                    to: node_of(e),
                })
        })
    }

    /// The edges at node `v` the given way, by the given relations: one item per edge, so a
    /// neighbour shows up once per relation linking it (and twice for `Both` when edges run
    /// both ways). Outgoing edges come first, each group ordered by relation then neighbour
    /// index. A node that is not live has none.
    pub fn neighbors<'a>(
        &'a self,
        v: NodeIx,
        dir: Direction,
        rels: &'a RelFilter,
    ) -> impl Iterator<Item = Neighbor> + 'a {
        self.segments(v, dir, rels).flat_map(|(seg, d)| {
            seg.iter().map(move |e| Neighbor {
                node: node_of(e),
                rel: rel_of(e),
                dir: d,
            })
        })
    }

    /// The number of edges [`Graph::neighbors`] would give (a self-loop counts once each
    /// way, so twice for `Both`). O(log degree) per relation.
    pub fn degree(&self, v: NodeIx, dir: Direction, rels: &RelFilter) -> usize {
        if rels.is_any() {
            return self.list_len(v, dir);
        }
        self.segments(v, dir, rels).map(|(s, _)| s.len()).sum()
    }

    /// `rels` as a list of relations to follow, or `None` when it follows every edge the
    /// graph has (then walks need not look at relations).
    pub(crate) fn rels_to_check<'a>(&self, rels: &'a RelFilter) -> Option<&'a [RelIx]> {
        let rs = rels.relations()?;
        let every = self
            .rel_edges
            .iter()
            .enumerate()
            .all(|(r, &n)| n == 0 || rs.binary_search(&(r as RelIx)).is_ok());
        (!every).then_some(rs)
    }

    /// Live edges of relation `r` (0 for a relation the graph does not know).
    #[inline]
    pub(crate) fn rel_edge_count(&self, r: RelIx) -> usize {
        self.rel_edges.get(r as usize).copied().unwrap_or(0)
    }

    /// The length of node `v`'s lists in `dir`, every relation.
    #[inline]
    pub(crate) fn list_len(&self, v: NodeIx, dir: Direction) -> usize {
        let out = if dir.has_out() {
            self.lists.len_of(v, Direction::Out)
        } else {
            0
        };
        let inn = if dir.has_in() {
            self.lists.len_of(v, Direction::In)
        } else {
            0
        };
        out + inn
    }

    /// The runs of node `v`'s lists that match, with the direction they go.
    #[inline]
    pub(crate) fn segments<'a>(
        &'a self,
        v: NodeIx,
        dir: Direction,
        rels: &'a RelFilter,
    ) -> impl Iterator<Item = (List<'a>, Direction)> + 'a {
        let out = dir.has_out().then(|| self.lists.get(v, Direction::Out));
        let inn = dir.has_in().then(|| self.lists.get(v, Direction::In));
        out.into_iter()
            .flat_map(|l| rels.split(l).map(|s| (s, Direction::Out)))
            .chain(
                inn.into_iter()
                    .flat_map(|l| rels.split(l).map(|s| (s, Direction::In))),
            )
    }

    /// An error unless `v` is a live node.
    pub(crate) fn check_node(&self, v: NodeIx) -> Result<(), GraphError> {
        if self.contains(v) {
            Ok(())
        } else {
            Err(GraphError::StaleNode(v))
        }
    }

    /// Packs the neighbour lists tightly and gives spare memory back (after a large build
    /// by one-by-one adds, or many removals). O(nodes + edges).
    pub fn shrink_to_fit(&mut self) {
        self.lists.shrink_to_fit();
        self.index.shrink_to_fit();
        self.ids.shrink_to_fit();
        self.meta.shrink_to_fit();
        self.free.shrink_to_fit();
    }

    /// Approximate bytes of heap memory held by the graph.
    pub fn memory_bytes(&self) -> usize {
        self.ids.memory_bytes()
            + self.index.capacity() * (std::mem::size_of::<(Arc<str>, NodeIx)>() + 1)
            + self.meta.capacity() * std::mem::size_of::<Meta>()
            + self.free.capacity() * std::mem::size_of::<NodeIx>()
            + self.rels.memory_bytes()
            + self.rel_edges.capacity() * std::mem::size_of::<usize>()
            + self.types.memory_bytes()
            + self.lists.memory_bytes()
    }

    /// Checks internal invariants (tests only).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        self.lists.check();
        assert_eq!(self.lists.live(Direction::Out), self.edges);
        assert_eq!(self.lists.live(Direction::In), self.edges);
        assert_eq!(self.nodes().count(), self.live);
        assert_eq!(self.index.len(), self.live);
        for v in self.nodes() {
            assert_eq!(self.node(self.id(v)), Some(v));
            for e in self.lists.get(v, Direction::Out).iter() {
                assert!(self.contains(node_of(e)));
                assert!(
                    self.lists
                        .contains(node_of(e), Direction::In, pack(rel_of(e), v))
                );
            }
            if self.is_implicit(v) {
                assert!(
                    self.list_len(v, Direction::Both) > 0,
                    "orphan implicit node"
                );
            }
        }
        // Walks trust each relation's count (a filter covering every relation with edges is
        // walked as no filter).
        let mut by_rel = vec![0; self.rel_edges.len()];
        for e in self.edges() {
            by_rel[e.rel as usize] += 1;
        }
        assert_eq!(by_rel, self.rel_edges);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(g: &Graph, it: impl Iterator<Item = Neighbor>) -> Vec<(String, String, Direction)> {
        it.map(|n| {
            (
                g.relation_name(n.rel).to_owned(),
                g.id(n.node).to_owned(),
                n.dir,
            )
        })
        .collect()
    }

    #[test]
    fn nodes_edges_and_neighbors() {
        let mut g = Graph::new();
        let a = g.add_node("a", Some("person"));
        g.add_node("b", None);
        assert!(g.add_edge("a", "knows", "b"));
        assert!(
            !g.add_edge("a", "knows", "b"),
            "same edge twice is one edge"
        );
        assert!(
            g.add_edge("a", "likes", "b"),
            "parallel edge of another relation"
        );
        assert!(g.add_edge("a", "knows", "a"), "self-loop");
        assert!(g.add_edge("c", "knows", "a"), "implicit endpoint");
        g.check();
        assert_eq!(g.node_count(), 3);
        assert_eq!(g.edge_count(), 4);
        let c = g.node("c").unwrap();
        assert!(g.is_implicit(c));
        assert!(!g.is_implicit(a));
        assert_eq!(g.node_type(a), Some("person"));

        let any = RelFilter::any();
        let knows = g.rel_filter(["knows"]);
        assert_eq!(
            ids(&g, g.neighbors(a, Direction::Out, &any)),
            vec![
                ("knows".into(), "a".into(), Direction::Out),
                ("knows".into(), "b".into(), Direction::Out),
                ("likes".into(), "b".into(), Direction::Out),
            ]
        );
        assert_eq!(
            ids(&g, g.neighbors(a, Direction::In, &knows)),
            vec![
                ("knows".into(), "a".into(), Direction::In),
                ("knows".into(), "c".into(), Direction::In),
            ]
        );
        assert_eq!(g.degree(a, Direction::Both, &any), 5);
        assert_eq!(g.degree(a, Direction::Both, &knows), 4);
        assert_eq!(g.degree(a, Direction::Out, &g.rel_filter(["nope"])), 0);
        assert_eq!(
            g.degree(a, Direction::Out, &g.rel_filter(["nope", "likes"])),
            1
        );

        // Removing the last edge of an implicit node removes it.
        assert!(g.remove_edge("c", "knows", "a"));
        assert_eq!(g.node("c"), None);
        assert!(!g.remove_edge("c", "knows", "a"));
        g.check();
        // Removing a node removes its edges both ways.
        assert!(g.remove_node("a"));
        assert_eq!(g.edge_count(), 0);
        assert_eq!(g.node_count(), 1);
        assert!(!g.remove_node("a"));
        g.check();
        // Slots are reused.
        let d = g.add_node("d", None);
        assert_eq!(d, a);
        assert_eq!(g.id(d), "d");
        assert_eq!(g.node_type(d), None);
    }

    #[test]
    fn removing_a_node_drops_orphaned_implicit_neighbours() {
        let mut g = Graph::new();
        g.add_node("hub", None);
        for i in 0..10 {
            g.add_edge("hub", "r", &format!("x{i}"));
        }
        g.add_edge("x0", "r", "x1");
        assert_eq!(g.node_count(), 11);
        g.remove_node("hub");
        g.check();
        assert_eq!(g.node_count(), 2);
        assert_eq!(g.edge_count(), 1);
    }

    #[test]
    fn bulk_load_matches_one_by_one() {
        let edges: Vec<(String, String, String)> = (0..5000u32)
            .map(|i| {
                (
                    format!("n{}", (i * 7919) % 613),
                    format!("r{}", i % 3),
                    format!("n{}", (i * 104_729) % 409),
                )
            })
            .collect();
        let bulk = Graph::from_edges(edges.iter().map(|(a, b, c)| (a, b, c)));
        let mut one = Graph::new();
        for (a, b, c) in &edges {
            one.add_edge(a, b, c);
        }
        bulk.check();
        one.check();
        assert_eq!(bulk.edge_count(), one.edge_count());
        assert_eq!(bulk.node_count(), one.node_count());
        let name = |g: &Graph, e: EdgeRef| {
            (
                g.id(e.from).to_owned(),
                g.relation_name(e.rel).to_owned(),
                g.id(e.to).to_owned(),
            )
        };
        let mut x: Vec<_> = bulk.edges().map(|e| name(&bulk, e)).collect();
        let mut y: Vec<_> = one.edges().map(|e| name(&one, e)).collect();
        x.sort();
        y.sort();
        assert_eq!(x, y);
        // A second large batch merges with what is there.
        let mut merged = bulk.clone();
        let more: Vec<_> = (0..3000u32)
            .map(|i| {
                (
                    format!("m{}", i % 100),
                    "r9".to_owned(),
                    format!("n{}", i % 50),
                )
            })
            .collect();
        let added = merged.extend_edges(more.iter().map(|(a, b, c)| (a, b, c)));
        merged.check();
        // m{i % 100} determines n{i % 50}: 100 distinct edges.
        assert_eq!(added, 100);
        assert_eq!(merged.edge_count(), bulk.edge_count() + added);
        // By index: the same graph as by name.
        let mut ix = Graph::new();
        let triples: Vec<_> = edges
            .iter()
            .map(|(a, b, c)| (ix.intern_node(a), ix.intern_relation(b), ix.intern_node(c)))
            .collect();
        assert_eq!(ix.extend_edges_ix(&triples), Ok(one.edge_count()));
        ix.check();
        let mut z: Vec<_> = ix.edges().map(|e| name(&ix, e)).collect();
        z.sort();
        assert_eq!(z, y);
    }

    #[test]
    fn a_bulk_load_by_index_refuses_indexes_it_did_not_give() {
        let mut g = Graph::new();
        let (a, r) = (g.intern_node("a"), g.intern_relation("r"));
        let stale = g.add_node("gone", None);
        g.remove_node("gone");
        for bad in [(a, r, stale), (a, r + 1, a), (99, r, a)] {
            assert!(g.extend_edges_ix(&[(a, r, a), bad]).is_err(), "{bad:?}");
        }
        assert_eq!(g.edge_count(), 0);
        assert_eq!(g.extend_edges_ix(&[(a, r, a)]), Ok(1));
    }

    #[test]
    fn stale_indexes() {
        let mut g = Graph::new();
        let a = g.add_node("a", None);
        g.remove_node("a");
        assert!(!g.contains(a));
        assert_eq!(g.get_id(a), None);
        assert_eq!(
            g.neighbors(a, Direction::Both, &RelFilter::any()).count(),
            0
        );
        assert_eq!(g.degree(99, Direction::Both, &RelFilter::any()), 0);
        assert!(matches!(
            g.add_edge_ix(EdgeRef {
                from: a,
                rel: 0,
                to: a
            }),
            Err(GraphError::StaleNode(_))
        ));
        assert_eq!(
            g.resolve(&["zz"]),
            Err(GraphError::UnknownNode("zz".to_owned()))
        );
    }
}
