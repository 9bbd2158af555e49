//! A bound on how deeply a statement may nest, checked on its tokens before
//! anything parses it. The SQL parser and planner recurse once per level of
//! nesting, and on some deeply nested inputs the parser backtracks at every
//! level, so a few kilobytes of brackets could keep a core busy for hours
//! (no `statement_timeout` covers parsing), and a chain of thousands of
//! `UNION`s or operators is a tree thousands of levels deep for the
//! planner. Tokenizing is linear; a statement nested deeper than
//! [`MAX_DEPTH`], or with more set operations or operators than
//! [`MAX_SET_OPERATIONS`] and [`MAX_OPERATORS`], is refused at once with
//! PostgreSQL's `54001` ("statement too complex"), and the connection goes
//! on. Real queries — BI tools' generated SQL included — nest a few levels.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use datafusion_postgres::pgwire::error::PgWireResult;

use super::statements::error;

/// Levels of parentheses, brackets and `CASE` a statement may nest.
pub(super) const MAX_DEPTH: usize = 32;
/// Set operations (`UNION`, `INTERSECT`, `EXCEPT`) in one statement: each
/// nests the plan one level deeper.
pub(super) const MAX_SET_OPERATIONS: usize = 500;
/// Binary operators (`+`, `||`, `AND`, `=`, …) in one statement: a chain
/// of them is a tree as deep as it is long.
pub(super) const MAX_OPERATORS: usize = 2_000;
/// Joined relations in one statement (each `JOIN`): the planner's work
/// grows faster than their number.
pub(super) const MAX_JOINS: usize = 64;
/// Items of one select list: PostgreSQL's own limit (`54011`).
pub(super) const MAX_SELECT_ITEMS: usize = 1_664;

/// `Ok` if `sql` nests at most [`MAX_DEPTH`] levels deep. Text that does not
/// tokenize is left to the parser, which reports it.
pub(super) fn check(sql: &str) -> PgWireResult<()> {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut set_operations, mut operators, mut joins) = (0usize, 0usize, 0usize);
    // The depth of the SELECT whose list is being read, and its items.
    let (mut select_at, mut items, mut most_items) = (None, 0usize, 0usize);
    for token in &tokens {
        match token {
            Token::Word(w) if w.keyword == Keyword::SELECT => {
                select_at = Some(depth);
                items = 1;
            }
            Token::Comma if select_at == Some(depth) => {
                items += 1;
                most_items = most_items.max(items);
            }
            Token::Word(w)
                if select_at == Some(depth)
                    && matches!(
                        w.keyword,
                        Keyword::FROM | Keyword::WHERE | Keyword::GROUP | Keyword::ORDER
                    ) =>
            {
                select_at = None
            }
            Token::Word(w) if w.keyword == Keyword::JOIN => joins += 1,
            _ => {}
        }
        match token {
            Token::LParen | Token::LBracket => depth += 1,
            Token::Word(w) if w.keyword == Keyword::CASE => depth += 1,
            Token::RParen | Token::RBracket => depth = depth.saturating_sub(1),
            Token::Word(w) if w.keyword == Keyword::END => depth = depth.saturating_sub(1),
            Token::Word(w)
                if matches!(
                    w.keyword,
                    Keyword::UNION | Keyword::INTERSECT | Keyword::EXCEPT
                ) =>
            {
                set_operations += 1
            }
            Token::Word(w) if matches!(w.keyword, Keyword::AND | Keyword::OR) => operators += 1,
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq => operators += 1,
            _ => {}
        }
        deepest = deepest.max(depth);
    }
    if most_items > MAX_SELECT_ITEMS {
        return Err(error(
            "54011",
            format!("target lists can have at most {MAX_SELECT_ITEMS} entries"),
        ));
    }
    if joins > MAX_JOINS {
        return Err(error(
            "54001",
            format!("statement too complex: {joins} joins; Panorama plans at most {MAX_JOINS}"),
        ));
    }
    if set_operations > MAX_SET_OPERATIONS || operators > MAX_OPERATORS {
        return Err(error(
            "54001",
            format!(
                "statement too complex: {set_operations} set operations and {operators} \
                 operators; Panorama plans at most {MAX_SET_OPERATIONS} and {MAX_OPERATORS}"
            ),
        ));
    }
    if deepest > MAX_DEPTH {
        return Err(error(
            "54001",
            format!(
                "statement too complex: it nests {deepest} levels deep \
                 (parentheses, brackets and CASE); Panorama plans at most {MAX_DEPTH}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_and_ordinary_sql_passes() {
        let deep = format!("SELECT {}1{}", "(".repeat(40), ")".repeat(40));
        assert!(check(&deep).is_err());
        let arrays = format!("SELECT {}1{}", "ARRAY[".repeat(5000), "]".repeat(5000));
        assert!(check(&arrays).is_err());
        let cases = "SELECT CASE WHEN x THEN ".repeat(50) + &" END".repeat(50);
        assert!(check(&cases).is_err());
        assert!(
            check(
                "SELECT c.relname, (SELECT count(*) FROM pg_attribute a \
                 WHERE a.attrelid = c.oid AND (a.attnum > 0)) FROM pg_class c \
                 WHERE c.relkind IN ('r', 'v') AND CASE WHEN true THEN 1 END = 1"
            )
            .is_ok()
        );
        assert!(check("SELECT 'unterminated").is_ok());
        let unions = "SELECT 1 UNION ALL ".repeat(600) + "SELECT 1";
        assert!(check(&unions).is_err());
        let sums = "SELECT 1".to_string() + &" + 1".repeat(3000);
        assert!(check(&sums).is_err());
        let list = format!("SELECT 1 WHERE x IN ({})", vec!["1"; 100_000].join(", "));
        assert!(check(&list).is_ok());
        let values = format!(
            "SELECT * FROM (VALUES {}) v",
            vec!["(1, 2)"; 50_000].join(", ")
        );
        assert!(check(&values).is_ok());
        let wide = format!("SELECT {} FROM t", vec!["1"; 2_000].join(", "));
        assert!(check(&wide).is_err());
        let joins = "SELECT 1 FROM t0".to_string() + &" JOIN t USING (a)".repeat(100);
        assert!(check(&joins).is_err());
    }
}
