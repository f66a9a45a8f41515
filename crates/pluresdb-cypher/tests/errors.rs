//! Bad input: syntax errors with exact positions, semantic and runtime errors.

mod common;

use common::*;
use pluresdb_cypher::{CypherError, ErrorKind, parse};
use serde_json::json;

/// Asserts a positioned error: `message` then " at line L, column C", where the position is
/// that of the `nth` occurrence of `needle` in the query (or the end for an empty needle).
fn assert_at(e: &CypherError, q: &str, needle: &str, message: &str) {
    let offset = if needle.is_empty() {
        q.len()
    } else {
        q.find(needle).expect("needle in query")
    };
    let before = &q[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    assert_eq!(
        e.message(),
        format!("{message} at line {line}, column {column}"),
        "full error:\n{e}"
    );
    let pos = e.position().expect("a position");
    assert_eq!((pos.offset, pos.line, pos.column), (offset, line, column));
}

fn syntax(q: &str, needle: &str, message: &str) {
    let e = parse(q).expect_err(q);
    assert_eq!(e.kind(), ErrorKind::Syntax, "{e}");
    assert_at(&e, q, needle, message);
}

fn semantic(q: &str, needle: &str, message: &str) {
    let mut g = social();
    let e = fail(&mut g, q);
    assert_eq!(e.kind(), ErrorKind::Semantic, "{e}");
    assert_at(&e, q, needle, message);
}

#[test]
fn syntax_errors_point_at_the_problem() {
    let q = "MATCH (a:Person RETURN a";
    syntax(q, "RETURN", "expected ')' but found 'RETURN'");
    assert_eq!(parse(q).unwrap_err().position().unwrap().column, 17);
    syntax(
        "MATCH (a)-[:KNOWS]->(b:Person {name: 'Bo'} RETURN b",
        "RETURN",
        "expected ')' but found 'RETURN'",
    );
    syntax(
        "MATCH (n) RETRUN n",
        "RETRUN",
        "expected a clause (MATCH, OPTIONAL MATCH, UNWIND, WITH, RETURN, CREATE, MERGE, SET, \
         REMOVE, DELETE) but found 'RETRUN'",
    );
    syntax(
        "MATCH (a)-[r:KNOWS->(b) RETURN a",
        "->",
        "expected ']' but found '-'",
    );
    syntax(
        "MATCH (n) RETURN n ORDER n.name",
        "n.name",
        "expected 'BY' but found 'n'",
    );
    syntax("MATCH (n) RETURN n # x", "#", "unexpected character '#'");
    syntax(
        "MATCH (n) WHERE n.name = 'x' AND RETURN n",
        "RETURN",
        "expected an expression but found 'RETURN'",
    );
    syntax(
        "RETURN 1 +",
        "",
        "expected an expression but found end of input",
    );
    syntax("RETURN 'abc", "'abc", "unterminated string literal");
    syntax("RETURN 'a\\qb'", "\\q", "invalid escape sequence '\\q'");
    syntax(
        "RETURN 99999999999999999999",
        "999",
        "the integer 99999999999999999999 is too large (the maximum is 9223372036854775807)",
    );
    syntax(
        "MATCH (a)-[*3..1]->(b) RETURN a",
        "]->",
        "the minimum length 3 is greater than the maximum 1",
    );
    syntax(
        "MATCH (a)-[:R]->(b RETURN a",
        "RETURN",
        "expected ')' but found 'RETURN'",
    );
    syntax(
        "MATCH (a)-[:R]-> RETURN a",
        "RETURN",
        "expected '(' to start a node pattern but found 'RETURN'",
    );
    syntax(
        "RETURN [1, 2",
        "",
        "expected ',' or ']' but found end of input",
    );
    syntax(
        "RETURN {a: 1 b: 2}",
        "b:",
        "expected ',' or '}' but found 'b'",
    );
}

#[test]
fn multi_line_errors_name_line_and_column_and_show_a_caret() {
    let q = "MATCH (n:Person)\nWHERE n.age >\nRETURN n";
    let e = parse(q).unwrap_err();
    assert_at(&e, q, "RETURN", "expected an expression but found 'RETURN'");
    assert_eq!(
        (e.position().unwrap().line, e.position().unwrap().column),
        (3, 1)
    );
    assert_eq!(
        e.to_string(),
        "expected an expression but found 'RETURN' at line 3, column 1\n  line 3: RETURN n\n          ^ (at byte 31)"
    );
    let q = "MATCH (a:Person RETURN a";
    assert_eq!(
        parse(q).unwrap_err().to_string(),
        "expected ')' but found 'RETURN' at line 1, column 17\n  MATCH (a:Person RETURN a\n                  ^ (at byte 16)"
    );
}

#[test]
fn semantic_errors_point_at_the_problem() {
    semantic("MATCH (n) RETURN m", "m", "variable `m` is not defined");
    // WITH ends the scope of what it does not project.
    let mut g = social();
    let e = fail(&mut g, "MATCH (a) WITH a.name AS x RETURN x, a");
    assert_eq!(
        e.message(),
        "variable `a` is not defined at line 1, column 38"
    );
    semantic("RETURN $missing", "$missing", "missing parameter $missing");
    semantic("RETURN foo(1)", "foo", "unknown function `foo`");
    semantic(
        "RETURN size(1, 2)",
        "size",
        "size() takes 1 argument but got 2",
    );
    semantic(
        "MATCH (n) WHERE count(n) > 1 RETURN n",
        "count",
        "aggregate functions like count() are not allowed in WHERE",
    );
    semantic(
        "RETURN count(count(*))",
        "count(*)",
        "aggregate functions like count() are not allowed in another aggregate's argument",
    );
    semantic(
        "MATCH (n) RETURN n.a AS k, n.b AS k",
        "n.b",
        "column `k` appears more than once; use AS to rename one",
    );
    semantic(
        "MATCH (n) WITH n.name RETURN 1",
        "n.name",
        "expression `n.name` in WITH must be aliased (add AS name)",
    );
    semantic(
        "MATCH (a)-[r]->(b) MATCH (r) RETURN r",
        "r) RETURN",
        "variable `r` is a relationship, not a node",
    );
    semantic(
        "MATCH (n:A:B) RETURN n",
        "B)",
        "PluresDB nodes have one label (their type); a pattern can name only one",
    );
    semantic(
        "MATCH (n) RETURN n.name =~ 'A.*'",
        "n.name",
        "regular expressions (=~) are not supported; use STARTS WITH, ENDS WITH or CONTAINS",
    );
    semantic(
        "MATCH (a)-[r]->(b), (c)-[r]->(d) RETURN a",
        "r]->(d)",
        "relationship variable `r` is used for more than one relationship",
    );
    semantic(
        "RETURN 1 LIMIT -1",
        "-1",
        "LIMIT must be a non-negative integer, not -1",
    );
    semantic(
        "MATCH (n) RETURN n LIMIT n.x",
        "n.x",
        "LIMIT must be a constant or a parameter",
    );
    semantic(
        "RETURN 1 AS x MATCH (n) RETURN n",
        "RETURN 1",
        "RETURN must be the last clause; use WITH to continue the query",
    );
    semantic(
        "MATCH (n)  ",
        "  ",
        "a query must end with RETURN or with an update clause (CREATE, MERGE, SET, REMOVE, DELETE)",
    );
    semantic(
        "MATCH (n) WITH collect(n) AS ns FOREACH (x IN ns | SET x.k = 1)",
        "FOREACH",
        "FOREACH is not supported; UNWIND the list and follow it with the update clauses, as \
         in WITH collect(n) AS ns UNWIND ns AS x SET x.k = 1",
    );
    semantic(
        "LOAD CSV WITH HEADERS FROM 'file:///people.csv' AS row CREATE (:Person {name: row.name})",
        "LOAD",
        "LOAD CSV is not supported; read the file in your program and pass its rows as a \
         parameter: UNWIND $rows AS row CREATE (n:Label {id: row.id, name: row.name})",
    );
    semantic(
        "MATCH (n) CALL { WITH n SET n.k = 1 }",
        "CALL",
        "CALL (procedures and subqueries) is not supported; write the query with MATCH, WITH \
         and UNWIND",
    );
    semantic(
        "MATCH p = shortestPath((a)-[*]-(b)) RETURN p",
        "shortestPath",
        "shortestPath() is not supported; use a variable-length pattern with ORDER BY length(p) LIMIT 1",
    );
}

#[test]
fn union_columns_must_match() {
    let mut g = social();
    let e = fail(&mut g, "RETURN 1 AS a UNION RETURN 2 AS b");
    assert_eq!(e.kind(), ErrorKind::Semantic);
    assert!(e.message().contains("same columns"), "{e}");
}

/// Integer sums and arithmetic fail beyond i64 (as in Neo4j) instead of turning into floats;
/// `sum` is exact whatever the row order, and `avg` (a float anyway) does not fail.
#[test]
fn integer_overflow_fails_in_sums_and_arithmetic() {
    let mut g = social();
    let max = i64::MAX;
    let e = fail(&mut g, &format!("UNWIND [{max}, 1] AS v RETURN sum(v)"));
    assert_eq!(e.kind(), ErrorKind::Runtime, "{e}");
    assert!(
        e.message()
            .starts_with("integer overflow: sum() of integers is 9223372036854775808,"),
        "{e}"
    );
    assert!(e.message().contains("toFloat()"), "{e}");
    let r = run(
        &mut g,
        &format!("UNWIND [{max}, 1, -1] AS v RETURN sum(v), avg(v), sum(toFloat(v)) > 9.2e18"),
    );
    assert_eq!(rows(&r), json!([[max, max as f64 / 3.0, true]]));
    let r = run(&mut g, &format!("UNWIND [{max}, {max}] AS v RETURN avg(v)"));
    assert_eq!(rows(&r), json!([[max as f64]]));
    // A float among the values makes the sum a float, before or after the integers.
    for list in [format!("[{max}, 1, 0.5]"), format!("[0.5, {max}, 1]")] {
        let r = run(&mut g, &format!("UNWIND {list} AS v RETURN sum(v)"));
        assert_eq!(rows(&r), json!([[max as f64 + 1.5]]), "{list}");
    }
    let min = "(-9223372036854775807 - 1)";
    for (q, msg) in [
        (
            format!("RETURN {max} + 1"),
            format!("integer overflow: {max} + 1 is beyond the 64-bit integer range"),
        ),
        (
            format!("RETURN {min} - 1"),
            format!("integer overflow: {} - 1 is", i64::MIN),
        ),
        (
            "RETURN 4611686018427387904 * 2".to_owned(),
            "integer overflow: 4611686018427387904 * 2 is".to_owned(),
        ),
        (
            format!("RETURN {min} / -1"),
            format!("integer overflow: {} / -1 is", i64::MIN),
        ),
    ] {
        let e = fail(&mut g, &q);
        assert!(e.message().starts_with(&msg), "{q}: {e}");
    }
    let r = run(&mut g, &format!("RETURN {min} % -1"));
    assert_eq!(rows(&r), json!([[0]]));
    // A whole float beyond i64 is no count (it was cast to i64::MAX).
    let e = fail(&mut g, "RETURN left('abc', 1e300)");
    assert!(
        e.message()
            .starts_with("left/right() does not accept FLOAT"),
        "{e}"
    );
}

#[test]
fn runtime_errors() {
    let mut g = social();
    let cases = [
        ("RETURN 1 / 0", "division by zero"),
        ("RETURN 'a' * 2", "cannot apply * to STRING and INTEGER"),
        ("RETURN 9223372036854775807 + 1", "integer overflow"),
        (
            "MATCH (n {id: 'ada'}) WHERE n.name RETURN n",
            "expected a boolean predicate but got STRING",
        ),
        (
            "RETURN 1 IN 2",
            "IN needs a list on the right but got INTEGER",
        ),
        (
            "RETURN toUpper(1)",
            "toUpper() does not accept INTEGER (got 1)",
        ),
        (
            "MATCH (a)-[r]->(b) RETURN id(r) LIMIT 1",
            "id() needs a node but got RELATIONSHIP",
        ),
        ("RETURN (1).name", "cannot read property `name` of INTEGER"),
    ];
    for (q, msg) in cases {
        let e = fail(&mut g, q);
        assert_eq!(e.kind(), ErrorKind::Runtime, "{q}: {e}");
        assert!(e.message().starts_with(msg), "{q}: {e}");
    }
}

#[test]
fn parameters_are_checked_before_running() {
    let q = parse("MATCH (n {name: $name}) RETURN n").unwrap();
    let e = q
        .check(&params(json!({})), &Default::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Semantic);
    q.check(&params(json!({"name": "x"})), &Default::default())
        .unwrap();
}

#[test]
fn deeply_nested_input_is_an_error_not_a_crash() {
    for q in [
        format!("RETURN {}1{}", "(".repeat(100_000), ")".repeat(100_000)),
        format!("RETURN {}true", "NOT ".repeat(100_000)),
        format!("RETURN {}1", "-".repeat(100_000)),
        format!("RETURN {}1{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!(
            "RETURN {}1{}",
            "size([".repeat(100_000),
            "])".repeat(100_000)
        ),
    ] {
        let e = parse(&q).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Syntax);
        assert!(
            e.message()
                .starts_with("the expression nests more than 64 levels deep"),
            "{}",
            e.message()
        );
        // The excerpt shows a window of the line, not all of it.
        assert!(e.to_string().len() < 400, "{} bytes", e.to_string().len());
    }
    for q in [
        format!("RETURN 1{}", " + 1".repeat(100_000)),
        format!("RETURN $m{}", ".k".repeat(100_000)),
        format!("RETURN true{}", " AND true".repeat(100_000)),
    ] {
        let e = parse(&q).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Syntax);
        assert!(
            e.message()
                .starts_with("the expression chains more than 250 operators"),
            "{}",
            e.message()
        );
    }
    // Long but shallow is fine, and so are the deepest accepted forms.
    let mut g = social();
    let q = format!("RETURN [{}]", vec!["1"; 10_000].join(", "));
    assert_eq!(run(&mut g, &q).rows[0][0].as_array().unwrap().len(), 10_000);
    let q = format!("RETURN 1{}", " + 1".repeat(240));
    assert_eq!(rows(&run(&mut g, &q)), json!([[241]]));
    let q = format!("RETURN true{}", " AND true".repeat(240));
    assert_eq!(rows(&run(&mut g, &q)), json!([[true]]));
    let q = format!("RETURN {}1{}", "(".repeat(60), ")".repeat(60));
    assert_eq!(rows(&run(&mut g, &q)), json!([[1]]));
    let q = format!("RETURN {}1{}", "[".repeat(60), "]".repeat(60));
    assert_eq!(run(&mut g, &q).rows.len(), 1);
    // A parameter built in code may nest deeper than JSON text can: refused past 128 levels.
    let nested = |levels: usize| {
        let mut v = json!(1);
        for i in 0..levels {
            v = if i % 2 == 0 {
                json!([v])
            } else {
                json!({"k": v})
            };
        }
        v
    };
    let e = fail_p(&mut g, "RETURN size($p)", json!({"p": nested(1000)}));
    assert!(
        e.message()
            .starts_with("parameter $p nests lists and maps more than 128 levels deep"),
        "{e}"
    );
    let ok = run_p(&mut g, "RETURN $p IS NULL", json!({"p": nested(128)}));
    assert_eq!(rows(&ok), json!([[false]]));
}
