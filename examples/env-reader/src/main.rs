//! Prints chosen environment variables as a JSON object. Input: variable names separated by
//! whitespace or commas; names that are not set map to `null`. Empty input prints every variable.

use std::io::Read;

fn main() {
    let mut input = String::new();
    if let Err(error) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("env-reader: reading stdin failed: {error}");
        std::process::exit(1);
    }
    let names: Vec<&str> = input
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|name| !name.is_empty())
        .collect();
    let entries: Vec<(String, Option<String>)> = if names.is_empty() {
        let mut all: Vec<(String, Option<String>)> = std::env::vars()
            .map(|(name, value)| (name, Some(value)))
            .collect();
        all.sort();
        all
    } else {
        names
            .iter()
            .map(|name| (name.to_string(), std::env::var(name).ok()))
            .collect()
    };
    let body: Vec<String> = entries
        .iter()
        .map(|(name, value)| {
            let value = value
                .as_deref()
                .map_or_else(|| "null".to_string(), json_string);
            format!("{}:{value}", json_string(name))
        })
        .collect();
    println!("{{{}}}", body.join(","));
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
