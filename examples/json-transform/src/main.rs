//! Parses a JSON document from stdin and prints a summary of it as JSON:
//! `{"type":..,"keys":[..],"numbers":n,"sum":x,"strings":n,"stringBytes":n,"trues":n,"maxDepth":d}`
//! (`keys` = the sorted top-level keys of an object). Invalid JSON exits with code 2 and says why on stderr, so the
//! executor's "guest failed" path has a realistic guest to test against.
//! The parser is hand-written because guests here are std-only and must build offline.

use std::io::Read;

mod json;

use json::Value;

fn main() {
    let mut input = String::new();
    if let Err(error) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("json-transform: reading stdin failed: {error}");
        std::process::exit(1);
    }
    let value = match json::parse(&input) {
        Ok(value) => value,
        Err(error) => {
            eprintln!("json-transform: invalid JSON input: {error}");
            std::process::exit(2);
        }
    };
    let mut stats = Stats::default();
    stats.visit(&value, 1);
    let keys = match &value {
        Value::Object(members) => {
            let mut keys: Vec<String> = members.iter().map(|(key, _)| json::quote(key)).collect();
            keys.sort();
            keys
        }
        _ => Vec::new(),
    };
    println!(
        "{{\"type\":\"{}\",\"keys\":[{}],\"numbers\":{},\"sum\":{},\"strings\":{},\"stringBytes\":{},\"trues\":{},\"maxDepth\":{}}}",
        value.type_name(),
        keys.join(","),
        stats.numbers,
        json::number(stats.sum),
        stats.strings,
        stats.string_bytes,
        stats.trues,
        stats.max_depth
    );
}

#[derive(Default)]
struct Stats {
    numbers: u64,
    sum: f64,
    strings: u64,
    string_bytes: usize,
    trues: u64,
    max_depth: usize,
}

impl Stats {
    fn visit(&mut self, value: &Value, depth: usize) {
        self.max_depth = self.max_depth.max(depth);
        match value {
            Value::Number(n) => {
                self.numbers += 1;
                self.sum += n;
            }
            Value::String(text) => {
                self.strings += 1;
                self.string_bytes += text.len();
            }
            Value::Bool(true) => self.trues += 1,
            Value::Array(items) => items.iter().for_each(|item| self.visit(item, depth + 1)),
            Value::Object(members) => members
                .iter()
                .for_each(|(_, item)| self.visit(item, depth + 1)),
            Value::Null | Value::Bool(false) => {}
        }
    }
}
