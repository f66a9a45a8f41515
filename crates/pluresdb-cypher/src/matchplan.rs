//! Plans one `MATCH`: picks the most selective start node (a bound variable, then an id
//! lookup, then property equalities with a label, then a label), expands along relationships
//! from the nodes already bound, and places each predicate right after the step that binds
//! the last variable it needs.

use std::collections::HashSet;

use crate::ast::RelDirection;
use crate::expr::{BinOp, CExpr};
use crate::functions::Func;
use crate::plan::{Expand, IdLookup, PathElem, Step};
use crate::store::Dir;

/// The variables and constraints of a `MATCH` clause.
#[derive(Debug, Default)]
pub(crate) struct PatternGraph {
    pub nodes: Vec<PatternNode>,
    pub rels: Vec<PatternRel>,
    pub preds: Vec<Pred>,
    pub paths: Vec<(usize, Vec<PathElem>)>,
}

/// A node variable (named or not) of the pattern.
#[derive(Debug)]
pub(crate) struct PatternNode {
    pub slot: usize,
}

/// A relationship of the pattern between two node slots.
#[derive(Debug)]
pub(crate) struct PatternRel {
    pub slot: usize,
    pub left: usize,
    pub right: usize,
    pub direction: RelDirection,
    pub types: Vec<String>,
    pub range: Option<(u64, u64)>,
    /// Property equalities that only use values known before the clause.
    pub props: Vec<(String, CExpr)>,
    /// The variable was bound by an earlier clause.
    pub bound: bool,
    /// The relationship has a variable name.
    pub named: bool,
}

/// A predicate (a WHERE conjunct, a label or a property of the pattern).
#[derive(Debug)]
pub(crate) struct Pred {
    pub expr: CExpr,
    deps: Vec<usize>,
    /// Ways the predicate can narrow a scan (`a.x = b.x` narrows either side).
    push: Vec<Push>,
}

/// How a predicate can narrow the node a match starts from.
#[derive(Debug)]
enum Push {
    Id(usize, CExpr),
    IdIn(usize, CExpr),
    Prop(usize, String, CExpr),
    Label(usize, String),
}

impl Pred {
    pub fn new(expr: CExpr) -> Pred {
        Pred {
            deps: expr.slots(),
            push: classify(&expr),
            expr,
        }
    }
}

/// The node slot an `n.id` / `id(n)` / `n.key` expression reads, with the key.
fn node_key(e: &CExpr) -> Option<(usize, &str)> {
    match e {
        CExpr::Prop(target, key) => match **target {
            CExpr::Slot(s) => Some((s, key.as_str())),
            _ => None,
        },
        CExpr::Call(Func::Id, args) => match args.as_slice() {
            [CExpr::Slot(s)] => Some((*s, "id")),
            _ => None,
        },
        _ => None,
    }
}

fn classify(e: &CExpr) -> Vec<Push> {
    let mut out = Vec::new();
    match e {
        CExpr::Bin(BinOp::Eq, a, b) => {
            for (side, value) in [(a, b), (b, a)] {
                if let Some((slot, key)) = node_key(side)
                    && !value.slots().contains(&slot)
                {
                    out.push(if key == "id" {
                        Push::Id(slot, (**value).clone())
                    } else {
                        Push::Prop(slot, key.to_owned(), (**value).clone())
                    });
                }
            }
        }
        CExpr::Bin(BinOp::In, a, b) => {
            if let Some((slot, "id")) = node_key(a)
                && !b.slots().contains(&slot)
            {
                out.push(Push::IdIn(slot, (**b).clone()));
            }
        }
        CExpr::HasLabels(target, labels) => {
            if let (CExpr::Slot(s), [label]) = (&**target, labels.as_slice()) {
                out.push(Push::Label(*s, label.clone()));
            }
        }
        _ => {}
    }
    out
}

struct Planner<'g> {
    g: &'g PatternGraph,
    bound: HashSet<usize>,
    done: Vec<bool>,
    steps: Vec<Step>,
}

impl Planner<'_> {
    fn ready(&self, e: &CExpr) -> bool {
        e.slots().iter().all(|s| self.bound.contains(s))
    }

    fn flush(&mut self) {
        for (i, p) in self.g.preds.iter().enumerate() {
            if !self.done[i] && p.deps.iter().all(|s| self.bound.contains(s)) {
                self.done[i] = true;
                self.steps.push(Step::Filter(p.expr.clone()));
            }
        }
    }

    /// Lower is better: 0 id lookup, 1 id list, 2 label and properties, 3 properties,
    /// 4 label, 5 full scan.
    fn start_score(&self, slot: usize) -> u8 {
        let (mut id, mut ids, mut prop, mut label) = (false, false, false, false);
        for push in self.g.preds.iter().flat_map(|p| &p.push) {
            match push {
                Push::Id(s, e) if *s == slot && self.ready(e) => id = true,
                Push::IdIn(s, e) if *s == slot && self.ready(e) => ids = true,
                Push::Prop(s, _, e) if *s == slot && self.ready(e) => prop = true,
                Push::Label(s, _) if *s == slot => label = true,
                _ => {}
            }
        }
        match (id, ids, prop, label) {
            (true, ..) => 0,
            (_, true, ..) => 1,
            (_, _, true, true) => 2,
            (_, _, true, false) => 3,
            (.., true) => 4,
            _ => 5,
        }
    }

    fn scan(&mut self, slot: usize) {
        let mut ids = None;
        let mut label = None;
        let mut props = Vec::new();
        for push in self.g.preds.iter().flat_map(|p| &p.push) {
            match push {
                Push::Id(s, e)
                    if *s == slot && self.ready(e) && !matches!(ids, Some(IdLookup::One(_))) =>
                {
                    ids = Some(IdLookup::One(e.clone()));
                }
                Push::IdIn(s, e) if *s == slot && self.ready(e) && ids.is_none() => {
                    ids = Some(IdLookup::Many(e.clone()));
                }
                Push::Prop(s, k, e) if *s == slot && self.ready(e) => {
                    props.push((k.clone(), e.clone()));
                }
                Push::Label(s, l) if *s == slot && label.is_none() => label = Some(l.clone()),
                _ => {}
            }
        }
        self.steps.push(Step::Scan {
            slot,
            ids,
            label,
            props,
        });
        self.bound.insert(slot);
        self.flush();
    }
}

/// Orders the steps of a `MATCH`. `bound` holds the slots bound before the clause.
pub(crate) fn plan_match(g: PatternGraph, bound: &HashSet<usize>) -> Result<Vec<Step>, String> {
    let mut p = Planner {
        g: &g,
        bound: bound.clone(),
        done: vec![false; g.preds.len()],
        steps: Vec::new(),
    };
    p.flush();
    let mut rel_done = vec![false; g.rels.len()];
    let mut clause_rels: Vec<usize> = Vec::new();
    loop {
        // Expand from what is bound, cheapest first.
        let mut best: Option<(u8, usize)> = None;
        for (i, r) in g.rels.iter().enumerate() {
            if rel_done[i] {
                continue;
            }
            let (l_in, r_in) = (p.bound.contains(&r.left), p.bound.contains(&r.right));
            if !l_in && !r_in {
                continue;
            }
            let far = if l_in { r.right } else { r.left };
            let score = if l_in && r_in {
                0
            } else if r.range.is_none() {
                if p.start_score(far) <= 3 { 1 } else { 2 }
            } else {
                3
            };
            if best.is_none_or(|(s, _)| score < s) {
                best = Some((score, i));
            }
        }
        if let Some((_, i)) = best {
            rel_done[i] = true;
            let r = &g.rels[i];
            let from_left = p.bound.contains(&r.left);
            let (from, to) = if from_left {
                (r.left, r.right)
            } else {
                (r.right, r.left)
            };
            let dir = match (r.direction, from_left) {
                (RelDirection::Right, true) | (RelDirection::Left, false) => Dir::Out,
                (RelDirection::Left, true) | (RelDirection::Right, false) => Dir::In,
                (RelDirection::Both, _) => Dir::Both,
            };
            p.steps.push(Step::Expand(Expand {
                from,
                rel: r.slot,
                to,
                dir,
                types: r.types.clone(),
                props: r.props.clone(),
                range: r.range,
                to_bound: p.bound.contains(&to),
                rel_bound: r.bound,
                unique_against: clause_rels.clone(),
                reversed: !from_left,
                keep_list: r.named
                    || g.rels.len() > 1
                    || g.paths.iter().any(|(_, elems)| {
                        elems
                            .iter()
                            .any(|e| matches!(e, PathElem::Rels(s) if *s == r.slot))
                    }),
            }));
            clause_rels.push(r.slot);
            p.bound.insert(to);
            p.bound.insert(r.slot);
            p.flush();
            continue;
        }
        // Otherwise start a new component at its most selective node.
        let start = g
            .nodes
            .iter()
            .filter(|n| !p.bound.contains(&n.slot))
            .min_by_key(|n| p.start_score(n.slot))
            .map(|n| n.slot);
        match start {
            Some(slot) => p.scan(slot),
            None => break,
        }
    }
    for (slot, elems) in &g.paths {
        p.steps.push(Step::Path {
            slot: *slot,
            elems: elems.clone(),
        });
        p.bound.insert(*slot);
        p.flush();
    }
    if p.done.iter().any(|d| !d) {
        return Err("internal error: a predicate uses a variable the pattern never binds".into());
    }
    Ok(p.steps)
}
