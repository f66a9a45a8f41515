//! Read queries: patterns, variable-length paths, joins, filters, projections, aggregates.

mod common;

use common::*;
use serde_json::{Value as Json, json};

#[test]
fn issue_example_end_to_end() {
    let mut g = social();
    let r = run(
        &mut g,
        "MATCH (a:Person {name: 'Ada'})-[:KNOWS*1..3]->(b) WHERE b.age > 30 \
         RETURN b.name, count(*) ORDER BY b.name LIMIT 10",
    );
    assert_eq!(r.columns, ["b.name", "count(*)"]);
    assert_eq!(rows(&r), json!([["Ada", 1], ["Bob", 1], ["Dee", 2]]));
}

#[test]
fn nodes_and_relationships_as_json() {
    let mut g = social();
    let r = run(
        &mut g,
        "MATCH (a {id: 'ada'})-[r:KNOWS]->(b {name: 'Bob'}) RETURN a, r, b.id, id(b)",
    );
    assert_eq!(
        rows(&r),
        json!([[
            {"id": "ada", "type": "Person", "data": {"name": "Ada", "age": 36}},
            {"from": "ada", "relation": "KNOWS", "to": "bob", "data": {"since": 2010}},
            "bob",
            "bob"
        ]])
    );
}

#[test]
fn directions() {
    let mut g = social();
    let out = run(
        &mut g,
        "MATCH (:Person {name: 'Ada'})-->(b) RETURN b.id ORDER BY b.id",
    );
    assert_eq!(col(&out, 0), [json!("acme"), json!("bob"), json!("cy")]);
    let inc = run(
        &mut g,
        "MATCH (a)<--(b) WHERE a.id = 'ada' RETURN b.id ORDER BY b.id",
    );
    assert_eq!(col(&inc, 0), [json!("dee"), json!("eve")]);
    let both = run(
        &mut g,
        "MATCH ({id: 'ada'})-[:KNOWS]-(b) RETURN b.id ORDER BY b.id",
    );
    assert_eq!(col(&both, 0), [json!("bob"), json!("cy"), json!("dee")]);
    let types = run(
        &mut g,
        "MATCH ({id: 'ada'})-[r:WORKS_AT|LIKES]-(b) RETURN type(r), b.id ORDER BY b.id",
    );
    assert_eq!(
        rows(&types),
        json!([["WORKS_AT", "acme"], ["LIKES", "eve"]])
    );
}

#[test]
fn undirected_matches_each_relationship_from_both_ends() {
    let mut g = social();
    let r = run(&mut g, "MATCH (a)-[:KNOWS]-(b) RETURN count(*)");
    assert_eq!(rows(&r), json!([[10]]));
    let r = run(&mut g, "MATCH (a)-[r]-(b) RETURN count(DISTINCT r)");
    assert_eq!(rows(&r), json!([[8]]));
}

#[test]
fn variable_length_cycles_terminate_and_list_each_path_once() {
    let mut g = social();
    // From ada along KNOWS without a bound (max depth 15): every trail once.
    let r = run(
        &mut g,
        "MATCH p = (a {id: 'ada'})-[:KNOWS*]->(b) RETURN [n IN nodes(p) | n.id] AS ids ORDER BY size(ids), ids",
    );
    assert_eq!(
        col(&r, 0),
        [
            json!(["ada", "bob"]),
            json!(["ada", "cy"]),
            json!(["ada", "bob", "cy"]),
            json!(["ada", "cy", "dee"]),
            json!(["ada", "bob", "cy", "dee"]),
            json!(["ada", "cy", "dee", "ada"]),
            json!(["ada", "bob", "cy", "dee", "ada"]),
            json!(["ada", "cy", "dee", "ada", "bob"]),
            json!(["ada", "bob", "cy", "dee", "ada", "cy"]),
            json!(["ada", "cy", "dee", "ada", "bob", "cy"]),
        ]
    );
    // Exact length and open lower bound.
    let two = run(
        &mut g,
        "MATCH ({id: 'ada'})-[:KNOWS*2]->(b) RETURN b.id ORDER BY b.id",
    );
    assert_eq!(col(&two, 0), [json!("cy"), json!("dee")]);
    let upto = run(
        &mut g,
        "MATCH ({id: 'ada'})-[:KNOWS*..1]->(b) RETURN b.id ORDER BY b.id",
    );
    assert_eq!(col(&upto, 0), [json!("bob"), json!("cy")]);
    let from4 = run(
        &mut g,
        "MATCH ({id: 'ada'})-[:KNOWS*4..]->(b) RETURN b.id ORDER BY b.id",
    );
    assert_eq!(
        col(&from4, 0),
        [json!("ada"), json!("bob"), json!("cy"), json!("cy")]
    );
    let zero = run(
        &mut g,
        "MATCH ({id: 'eve'})-[*0..1]->(b) RETURN b.id ORDER BY b.id",
    );
    assert_eq!(col(&zero, 0), [json!("ada"), json!("eve")]);
}

#[test]
fn variable_length_relationship_list_and_path_functions() {
    let mut g = social();
    let r = run(
        &mut g,
        "MATCH p = (a {id: 'eve'})-[rs:LIKES|KNOWS*2]->(b {id: 'bob'}) \
         RETURN length(p), size(rs), [r IN rs | type(r)], [r IN relationships(p) | r.since], b.name",
    );
    assert_eq!(
        rows(&r),
        json!([[2, 2, ["LIKES", "KNOWS"], [null, 2010], "Bob"]])
    );
    // Walking a var-length pattern from its right end keeps the list in pattern order.
    let r = run(
        &mut g,
        "MATCH (a)-[rs:KNOWS*2]->(b {id: 'dee'}) RETURN a.id, [r IN rs | startNode(r).id + '>' + endNode(r).id] ORDER BY a.id",
    );
    assert_eq!(
        rows(&r),
        json!([["ada", ["ada>cy", "cy>dee"]], ["bob", ["bob>cy", "cy>dee"]]])
    );
}

#[test]
fn relationship_isomorphism_within_a_match() {
    let mut g = social();
    // Two hops on an undirected pattern may not reuse the same relationship.
    let r = run(
        &mut g,
        "MATCH ({id: 'eve'})-[]-(x)-[]-(y) RETURN y.id ORDER BY y.id",
    );
    assert_eq!(
        col(&r, 0),
        [json!("acme"), json!("bob"), json!("cy"), json!("dee")]
    );
    // Across comma-separated patterns too.
    let r = run(
        &mut g,
        "MATCH (a {id: 'eve'})-[r1]->(b), (c)-[r2:LIKES]->(b) RETURN count(*)",
    );
    assert_eq!(rows(&r), json!([[0]]));
}

#[test]
fn multiple_patterns_join_on_shared_variables() {
    let mut g = social();
    let r = run(
        &mut g,
        "MATCH (a:Person)-[:WORKS_AT]->(c:Company), (a)-[:KNOWS]->(b) \
         RETURN a.name, b.name, c.name ORDER BY a.name, b.name",
    );
    assert_eq!(
        rows(&r),
        json!([
            ["Ada", "Bob", "Acme"],
            ["Ada", "Cy", "Acme"],
            ["Bob", "Cy", "Acme"]
        ])
    );
    // Two MATCH clauses, and a cartesian product.
    let r = run(
        &mut g,
        "MATCH (c:Company) MATCH (p:Person)-[:WORKS_AT]->(c) RETURN c.name, collect(p.name)",
    );
    assert_eq!(rows(&r), json!([["Acme", ["Ada", "Bob"]]]));
    let r = run(&mut g, "MATCH (a:Company), (b:Company) RETURN count(*)");
    assert_eq!(rows(&r), json!([[1]]));
    // A triangle closes on a bound node.
    let r = run(
        &mut g,
        "MATCH (a)-[:KNOWS]->(b)-[:KNOWS]->(c)-[:KNOWS]->(a) RETURN a.id ORDER BY a.id",
    );
    assert_eq!(col(&r, 0), [json!("ada"), json!("cy"), json!("dee")]);
}

#[test]
fn aggregates_with_implicit_grouping() {
    let mut g = social();
    let r = run(
        &mut g,
        "MATCH (a:Person)-[:KNOWS]->(b) RETURN a.name AS who, count(b) AS n, collect(b.name) AS names, \
         min(b.age), max(b.age), sum(b.age), avg(b.age) ORDER BY n DESC, who",
    );
    assert_eq!(r.columns[3], "min(b.age)");
    assert_eq!(
        rows(&r),
        json!([
            ["Ada", 2, ["Bob", "Cy"], 25, 41, 66, 33.0],
            ["Bob", 1, ["Cy"], 25, 25, 25, 25.0],
            ["Cy", 1, ["Dee"], 52, 52, 52, 52.0],
            ["Dee", 1, ["Ada"], 36, 36, 36, 36.0]
        ])
    );
    // count(*) vs count(x) vs count(DISTINCT x); aggregates over no rows.
    let r = run(
        &mut g,
        "MATCH (p:Person) RETURN count(*), count(p.age), count(DISTINCT p.age > 30), sum(p.age)",
    );
    assert_eq!(rows(&r), json!([[5, 4, 2, 154]]));
    let r = run(
        &mut g,
        "MATCH (p:Nobody) RETURN count(*), collect(p), sum(p.x), avg(p.x), min(p.x)",
    );
    assert_eq!(rows(&r), json!([[0, [], 0, null, null]]));
    let r = run(&mut g, "MATCH (p:Nobody) RETURN p.name, count(*)");
    assert!(r.rows.is_empty());
    // An expression around an aggregate, and ORDER BY an aggregate not returned.
    let r = run(
        &mut g,
        "MATCH (a)-[:KNOWS]->(b) RETURN a.id, count(*) * 10 AS score ORDER BY max(b.age) DESC LIMIT 2",
    );
    assert_eq!(rows(&r), json!([["cy", 10], ["ada", 20]]));
}

#[test]
fn order_skip_limit_distinct() {
    let mut g = social();
    // Null is the largest value: first when descending.
    let r = run(
        &mut g,
        "MATCH (p:Person) RETURN p.name ORDER BY p.age DESC, p.name SKIP 1 LIMIT 3",
    );
    assert_eq!(col(&r, 0), [json!("Dee"), json!("Bob"), json!("Ada")]);
    // Nulls sort last ascending, first descending.
    let r = run(&mut g, "MATCH (p:Person) RETURN p.age ORDER BY p.age");
    assert_eq!(col(&r, 0).last(), Some(&json!(null)));
    let r = run(
        &mut g,
        "MATCH (p:Person) RETURN p.age ORDER BY p.age DESC LIMIT 1",
    );
    assert_eq!(rows(&r), json!([[null]]));
    let r = run(
        &mut g,
        "MATCH (a)-[:KNOWS]->(b) RETURN DISTINCT a.id ORDER BY a.id",
    );
    assert_eq!(
        col(&r, 0),
        [json!("ada"), json!("bob"), json!("cy"), json!("dee")]
    );
    let r = run_p(
        &mut g,
        "MATCH (p:Person) RETURN p.id SKIP $s LIMIT $l",
        json!({"s": 4, "l": 10}),
    );
    assert_eq!(r.rows.len(), 1);
    let r = run(&mut g, "MATCH (p:Person) RETURN p.id LIMIT 0");
    assert!(r.rows.is_empty());
    // ORDER BY a variable that is not returned.
    let r = run(
        &mut g,
        "MATCH (p:Person) WHERE p.age IS NOT NULL RETURN p.name ORDER BY p.age LIMIT 2",
    );
    assert_eq!(col(&r, 0), [json!("Cy"), json!("Ada")]);
}

#[test]
fn return_star_and_aliases() {
    let mut g = social();
    let r = run(&mut g, "MATCH (b)<-[r:LIKES]-(a) RETURN *");
    assert_eq!(r.columns, ["a", "b", "r"]);
    let r = run(
        &mut g,
        "MATCH (a {id: 'ada'}) RETURN a.name AS `full name`, a.age + 1 AS next",
    );
    assert_eq!(r.columns, ["full name", "next"]);
    assert_eq!(rows(&r), json!([["Ada", 37]]));
}

#[test]
fn parameters_everywhere() {
    let mut g = social();
    let r = run_p(
        &mut g,
        "MATCH (a:Person {name: $name})-[:KNOWS]->(b) WHERE b.age >= $min AND b.id IN $ids RETURN b.id",
        json!({"name": "Ada", "min": 30, "ids": ["bob", "cy"]}),
    );
    assert_eq!(rows(&r), json!([["bob"]]));
    let r = run_p(
        &mut g,
        "MATCH (n) WHERE n.id IN $ids RETURN n.name ORDER BY n.name",
        json!({"ids": ["cy", "nope", "ada"]}),
    );
    assert_eq!(col(&r, 0), [json!("Ada"), json!("Cy")]);
    let r = run_p(
        &mut g,
        "MATCH (n $props) RETURN n.id",
        json!({"props": {"name": "Dee", "age": 52.0}}),
    );
    assert_eq!(rows(&r), json!([["dee"]]));
    let r = run_p(
        &mut g,
        "RETURN $list[1], $map.k, $`odd name`",
        json!({"list": [1, 2], "map": {"k": "v"}, "odd name": true}),
    );
    assert_eq!(rows(&r), json!([[2, "v", true]]));
}

#[test]
fn null_semantics() {
    let mut g = social();
    let r = run(
        &mut g,
        "RETURN null = null, null <> 1, 1 < null, null AND false, null OR true, null AND true, \
         NOT null, 1 IN [2, null], 2 IN [2, null], null IS NULL, [1, null] = [1, null], 1 = 1.0",
    );
    assert_eq!(
        rows(&r),
        json!([[
            null, null, null, false, true, null, null, null, true, true, null, true
        ]])
    );
    // WHERE treats null as false: eve has no age.
    let r = run(
        &mut g,
        "MATCH (p:Person) WHERE p.age > 30 OR p.age < 30 RETURN count(*)",
    );
    assert_eq!(rows(&r), json!([[4]]));
    let r = run(
        &mut g,
        "MATCH (p:Person) WHERE NOT p.age > 30 RETURN p.name ORDER BY p.name",
    );
    assert_eq!(col(&r, 0), [json!("Cy")]);
    let r = run(&mut g, "MATCH (p:Person) WHERE p.age IS NULL RETURN p.name");
    assert_eq!(rows(&r), json!([["Eve"]]));
    // A missing property and a property of null are null.
    let r = run(
        &mut g,
        "MATCH (p {id: 'eve'}) OPTIONAL MATCH (p)-[:KNOWS]->(q) RETURN p.nope, q, q.name",
    );
    assert_eq!(rows(&r), json!([[null, null, null]]));
    // Equality to a null property value never matches.
    let r = run_p(&mut g, "MATCH (p {name: $n}) RETURN p", json!({"n": null}));
    assert!(r.rows.is_empty());
}

#[test]
fn optional_match() {
    let mut g = social();
    let r = run(
        &mut g,
        "MATCH (p:Person) OPTIONAL MATCH (p)-[:WORKS_AT]->(c) RETURN p.id, c.name ORDER BY p.id",
    );
    assert_eq!(
        rows(&r),
        json!([
            ["ada", "Acme"],
            ["bob", "Acme"],
            ["cy", null],
            ["dee", null],
            ["eve", null]
        ])
    );
    // WHERE belongs to the OPTIONAL MATCH: rows are kept with nulls.
    let r = run(
        &mut g,
        "MATCH (p {id: 'ada'}) OPTIONAL MATCH (p)-[:KNOWS]->(f) WHERE f.age > 100 RETURN p.id, f",
    );
    assert_eq!(rows(&r), json!([["ada", null]]));
    // A null from OPTIONAL MATCH in a later MATCH matches nothing.
    let r = run(
        &mut g,
        "MATCH (p {id: 'cy'}) OPTIONAL MATCH (p)-[:WORKS_AT]->(c) MATCH (c)<-[:WORKS_AT]-(x) RETURN x",
    );
    assert!(r.rows.is_empty());
}

#[test]
fn with_unwind_and_chaining() {
    let mut g = social();
    let r = run(
        &mut g,
        "MATCH (a:Person)-[:KNOWS]->(b) WITH a, count(b) AS friends WHERE friends > 1 \
         RETURN a.name, friends",
    );
    assert_eq!(rows(&r), json!([["Ada", 2]]));
    let r = run(
        &mut g,
        "MATCH (p:Person) WITH p ORDER BY p.age DESC LIMIT 3 MATCH (p)-[:KNOWS]->(q) RETURN p.name, q.name",
    );
    assert_eq!(rows(&r), json!([["Dee", "Ada"], ["Bob", "Cy"]]));
    let r = run(
        &mut g,
        "UNWIND [3, 1, 2] AS x WITH x WHERE x > 1 RETURN x ORDER BY x",
    );
    assert_eq!(col(&r, 0), [json!(2), json!(3)]);
    let r = run_p(
        &mut g,
        "UNWIND $ids AS id MATCH (n {id: id}) RETURN n.name",
        json!({"ids": ["bob", "dee"]}),
    );
    assert_eq!(col(&r, 0), [json!("Bob"), json!("Dee")]);
    let r = run(
        &mut g,
        "WITH 2 AS x, [1, 2, 3] AS xs RETURN [y IN xs WHERE y >= x | y * 10] AS big, xs[0..x]",
    );
    assert_eq!(rows(&r), json!([[[20, 30], [1, 2]]]));
    let r = run(
        &mut g,
        "MATCH (n:Person) WITH DISTINCT n.age > 30 AS old RETURN old ORDER BY old",
    );
    assert_eq!(col(&r, 0), [json!(false), json!(true), json!(null)]);
}

#[test]
fn expressions_and_functions() {
    let mut g = social();
    let r = run(
        &mut g,
        "RETURN 7 / 2, 7 % 3, 2 ^ 3, 7 / 2.0, -(3), 'a' + 1, [1] + [2, 3], 1 + 2 * 3 - 4, \
         toUpper('abc'), toLower('ABC'), size('héllo'), size([1, 2]), coalesce(null, 'x', 'y'), \
         'hello' STARTS WITH 'he', 'hello' ENDS WITH 'lo', 'hello' CONTAINS 'ell', \
         substring('hello', 1, 3), split('a,b', ','), replace('aXbX', 'X', '-'), trim('  x '), \
         toInteger('42'), toFloat('1.5'), toString(3.0), abs(-2), round(2.5), range(1, 4), \
         head([1, 2]), last([1, 2]), tail([1, 2, 3]), reverse('abc'), CASE WHEN 1 > 2 THEN 'a' ELSE 'b' END, \
         CASE 2 WHEN 1 THEN 'one' WHEN 2 THEN 'two' END, 1 < 2 < 3, true XOR true, \"dq\\n\"",
    );
    assert_eq!(
        rows(&r),
        json!([[
            3,
            1,
            8.0,
            3.5,
            -3,
            "a1",
            [1, 2, 3],
            3,
            "ABC",
            "abc",
            5,
            2,
            "x",
            true,
            true,
            true,
            "ell",
            ["a", "b"],
            "a-b-",
            "x",
            42,
            1.5,
            "3.0",
            2,
            3.0,
            [1, 2, 3, 4],
            1,
            2,
            [2, 3],
            "cba",
            "b",
            "two",
            true,
            false,
            "dq\n"
        ]])
    );
    let r = run(
        &mut g,
        "MATCH (a {id: 'ada'})-[r:KNOWS]->(b {id: 'bob'}) RETURN labels(a), type(r), keys(a), \
         properties(r), startNode(r).id, endNode(r).name, a:Person, a:Company, exists(a.age)",
    );
    assert_eq!(
        rows(&r),
        json!([[["Person"], "KNOWS", ["age", "name"], {"since": 2010}, "ada", "Bob", true, false, true]])
    );
}

#[test]
fn where_label_and_id_pushdown() {
    let mut g = social();
    let r = run(&mut g, "MATCH (n) WHERE n:Company RETURN n.id");
    assert_eq!(rows(&r), json!([["acme"]]));
    let r = run(
        &mut g,
        "MATCH (n)-[:KNOWS]->(m) WHERE id(m) = 'ada' RETURN n.id",
    );
    assert_eq!(rows(&r), json!([["dee"]]));
    let r = run(&mut g, "MATCH (n) WHERE n.id = 'missing' RETURN n");
    assert!(r.rows.is_empty());
    let r = run(&mut g, "MATCH (n:Company {id: 'ada'}) RETURN n");
    assert!(r.rows.is_empty());
}

#[test]
fn keywords_are_case_insensitive_and_identifiers_can_be_quoted() {
    let mut g = social();
    let r = run(
        &mut g,
        "match (`the node`:Person {name: 'Ada'}) where `the node`.age > 1 return `the node`.name as name order by name desc limit 1",
    );
    assert_eq!(rows(&r), json!([["Ada"]]));
}

#[test]
fn union_and_union_all() {
    let mut g = social();
    let r = run(
        &mut g,
        "MATCH (n:Company) RETURN n.name AS x UNION MATCH (n {id: 'ada'}) RETURN n.name AS x UNION RETURN 'Acme' AS x",
    );
    assert_eq!(rows(&r), json!([["Acme"], ["Ada"]]));
    let r = run(&mut g, "RETURN 1 AS x UNION ALL RETURN 1 AS x");
    assert_eq!(rows(&r), json!([[1], [1]]));
}

#[test]
fn paths_are_lists_of_nodes_and_relationships() {
    let mut g = social();
    let r = run(
        &mut g,
        "MATCH p = ({id: 'eve'})-[:LIKES]->(a) RETURN p, length(p)",
    );
    assert_eq!(
        rows(&r),
        json!([[[
            {"id": "eve", "type": "Person", "data": {"name": "Eve"}},
            {"from": "eve", "relation": "LIKES", "to": "ada", "data": {}},
            {"id": "ada", "type": "Person", "data": {"name": "Ada", "age": 36}}
        ], 1]])
    );
}

#[test]
fn read_only_execution() {
    let g = social();
    let opts = pluresdb_cypher::ExecOptions::default();
    let r = pluresdb_cypher::execute_read(
        &g,
        "MATCH (n:Company) RETURN n.name",
        &params(json!({})),
        &opts,
    )
    .unwrap();
    assert_eq!(rows(&r), json!([["Acme"]]));
    let e = pluresdb_cypher::execute_read(&g, "CREATE (n)", &params(json!({})), &opts).unwrap_err();
    assert_eq!(e.kind(), pluresdb_cypher::ErrorKind::ReadOnly);
    assert!(
        pluresdb_cypher::parse("MATCH (n) RETURN n")
            .unwrap()
            .is_read_only()
    );
    assert!(
        !pluresdb_cypher::parse("MATCH (n) SET n.x = 1")
            .unwrap()
            .is_read_only()
    );
}

#[test]
fn relationship_properties_and_bound_relationships() {
    let mut g = social();
    let r = run(
        &mut g,
        "MATCH (a)-[r:KNOWS {since: 2010}]->(b) RETURN a.id, b.id",
    );
    assert_eq!(rows(&r), json!([["ada", "bob"]]));
    let r = run(
        &mut g,
        "MATCH (a)-[:KNOWS*1..3 {since: 2010}]->(b) RETURN b.id",
    );
    assert_eq!(rows(&r), json!([["bob"]]));
    let r = run(
        &mut g,
        "MATCH ()-[r:KNOWS {since: 2010}]->() WITH r MATCH (a)-[r]->(b) RETURN a.id, b.id",
    );
    assert_eq!(rows(&r), json!([["ada", "bob"]]));
    let r = run(
        &mut g,
        "MATCH (a)-[r]->(b) WHERE r.since > 2000 RETURN type(r)",
    );
    assert_eq!(rows(&r), json!([["KNOWS"]]));
}

#[test]
fn with_star_and_count_without_match() {
    let mut g = social();
    let r = run(
        &mut g,
        "MATCH (a {id: 'ada'}) WITH *, a.age AS age RETURN a.id, age",
    );
    assert_eq!(rows(&r), json!([["ada", 36]]));
    let r = run(&mut g, "RETURN count(*) AS one");
    assert_eq!(rows(&r), json!([[1]]));
}

#[test]
fn range_near_the_integer_limits_does_not_overflow() {
    let mut g = social();
    let r = run(
        &mut g,
        "RETURN range(-9223372036854775808, 9223372036854775807, 9223372036854775807), \
         range(9223372036854775807, -9223372036854775808, -9223372036854775807)",
    );
    assert_eq!(
        rows(&r),
        json!([[[i64::MIN, -1, i64::MAX - 1], [i64::MAX, 0, -i64::MAX]]])
    );
}

#[test]
fn round_is_exact_and_rounds_half_up() {
    let mut g = social();
    let r = run(
        &mut g,
        "RETURN round(0.49999999999999994), round(4503599627370497.0), round(-2.5), \
         round(2.5), round(-2.6), round(-0.4)",
    );
    assert_eq!(
        rows(&r),
        json!([[0.0, 4503599627370497.0, -2.0, 3.0, -3.0, -0.0]])
    );
}

#[test]
fn order_by_mixes_integers_and_floats_near_2_53() {
    // Comparing through f64 made the order intransitive here, and the sort panicked.
    let mut g = social();
    let xs = "[9007199254740991.0,9007199254740992,9007199254740991,9007199254740993,\
              9007199254740994,9007199254740990.0,9007199254740994.0,9007199254740992.0,\
              9007199254740993,9007199254740992,9007199254740994.0,9007199254740990,\
              9007199254740992,9007199254740992.0,9007199254740990,9007199254740992,\
              9007199254740991,9007199254740991,9007199254740992.0,9007199254740994.0,\
              9007199254740993]";
    let exact = |v: &Json| {
        v.as_i64()
            .map_or_else(|| v.as_f64().unwrap() as i128, i128::from)
    };
    let r = run(&mut g, &format!("UNWIND {xs} AS x RETURN x ORDER BY x"));
    let sorted: Vec<i128> = col(&r, 0).iter().map(exact).collect();
    assert_eq!(sorted.len(), 21);
    assert!(sorted.is_sorted(), "{sorted:?}");
    // min() and max() keep the first of equal values, an integer or a float.
    let r = run(
        &mut g,
        &format!("UNWIND {xs} AS x RETURN min(x), max(x), 9007199254740993 > 9007199254740992.0"),
    );
    let ends: Vec<i128> = r.rows[0][..2].iter().map(exact).collect();
    assert_eq!(ends, [9007199254740990, 9007199254740994]);
    assert_eq!(r.rows[0][2], json!(true));
}
