//! Functions a reader can hold in their head: none in `src/` (outside unit
//! tests) is longer than [`MAX_LINES`] lines, but those listed in
//! [`TOO_LONG`] — each at most as long as listed, so the list only shrinks
//! (a listed function that fits is to be taken off it). Lengths are
//! counted on `cargo fmt`'s layout, from the `fn` line to its closing
//! brace.

use std::collections::BTreeMap;
use std::path::Path;

const MAX_LINES: usize = 120;

/// (file under `src/`, function, its length when it was listed).
const TOO_LONG: &[(&str, &str, usize)] = &[];

#[test]
fn no_function_is_longer_than_a_reader_can_follow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut lengths: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let file = path.strip_prefix(&src).expect("under src");
                let text = std::fs::read_to_string(&path).expect("read a source file");
                for (name, length) in function_lengths(&text) {
                    let key = (file.display().to_string(), name);
                    let longest = lengths.entry(key).or_default();
                    *longest = (*longest).max(length);
                }
            }
        }
    }
    assert!(
        lengths.len() > 500,
        "found only {} functions",
        lengths.len()
    );
    let listed: BTreeMap<(String, String), usize> = TOO_LONG
        .iter()
        .map(|(file, name, length)| ((file.to_string(), name.to_string()), *length))
        .collect();
    let mut wrong = Vec::new();
    for ((file, name), length) in &lengths {
        match listed.get(&(file.clone(), name.clone())) {
            None if *length > MAX_LINES => wrong.push(format!(
                "src/{file}: fn {name} has {length} lines (at most {MAX_LINES})"
            )),
            Some(limit) if length > limit => wrong.push(format!(
                "src/{file}: fn {name} grew to {length} lines (listed at {limit}; split it)"
            )),
            Some(_) if *length <= MAX_LINES => wrong.push(format!(
                "src/{file}: fn {name} now has {length} lines: take it off TOO_LONG"
            )),
            _ => {}
        }
    }
    for (file, name) in listed.keys() {
        if !lengths.contains_key(&(file.clone(), name.clone())) {
            wrong.push(format!(
                "src/{file}: fn {name} is gone: take it off TOO_LONG"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn lengths_run_from_the_fn_line_to_its_closing_brace() {
    let text = "fn short() {\n    a();\n}\n\n    pub(crate) async fn method(\n        x: u8,\n    ) -> u8 {\n        x\n    }\n\nfn declared();\n#[cfg(test)]\nmod tests {\n    fn ignored() {}\n}\n";
    assert_eq!(
        function_lengths(text),
        vec![("short".to_string(), 3), ("method".to_string(), 5)]
    );
}

/// Each function of `text` (before its `#[cfg(test)]` module) and its
/// length in lines, on rustfmt's layout: the body closes on the first line
/// that is its `fn` line's indentation and `}`.
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else { continue };
        let indent = line.len() - line.trim_start().len();
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';')
        }) else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue;
        }
        if lines[open].trim_end().ends_with("{}") {
            out.push((name, open - i + 1));
            continue;
        }
        let close = (open + 1..lines.len()).find(|&j| {
            let l = lines[j];
            l.len() - l.trim_start().len() == indent && l.trim_start().starts_with('}')
        });
        if let Some(close) = close {
            out.push((name, close - i + 1));
        }
    }
    out
}

/// The name of the function `line` declares, if it declares one.
fn fn_name(line: &str) -> Option<String> {
    let mut words = line.split_whitespace().peekable();
    while let Some(&word) = words.peek() {
        if word == "pub"
            || word.starts_with("pub(")
            || ["async", "const", "unsafe", "extern"].contains(&word)
        {
            words.next();
        } else {
            break;
        }
    }
    if words.next()? != "fn" {
        return None;
    }
    let rest = words.next()?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}
