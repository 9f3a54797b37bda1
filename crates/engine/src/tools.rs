//! Engine-native tools of a session: what they take and return ([`ToolSpec`]) and how a call
//! with named arguments runs ([`call_native`]). Arguments are checked against the spec (unknown
//! or missing names, wrong types: each error names the argument).

use std::collections::BTreeMap;

use dspex_native::{chunk_words, Tokenizer};

use crate::error::{EngineError, Result};
use crate::session::{Data, Session};

/// One parameter of a tool.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolParam {
    /// Its name.
    pub name: &'static str,
    /// Its type: "str", "int", "float", "bool", "any", "list[str]".
    pub ty: &'static str,
    /// Its default; None: required.
    pub default: Option<Data>,
    /// What it means.
    pub description: &'static str,
}

/// What a tool takes and returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The tool's name.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// Its parameters, in order.
    pub params: Vec<ToolParam>,
    /// The type of its result.
    pub returns: &'static str,
}

fn param(
    name: &'static str,
    ty: &'static str,
    default: Option<Data>,
    description: &'static str,
) -> ToolParam {
    ToolParam {
        name,
        ty,
        default,
        description,
    }
}

/// The engine-native tools every session has.
pub fn native_specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "echo",
            description: "Returns its argument (measures the cost of a call).",
            params: vec![param("value", "any", Some(Data::Null), "what to return")],
            returns: "any",
        },
        ToolSpec {
            name: "search",
            description: "BM25 full-text search of an index of the session (see index); returns \
                          the best documents as {id, score, text}, best first.",
            params: vec![
                param("index", "str", None, "the index's name"),
                param("query", "str", None, "the query text"),
                param("k", "int", Some(Data::Int(5)), "how many documents"),
                param(
                    "k1",
                    "float",
                    Some(Data::Float(1.2)),
                    "term-frequency saturation",
                ),
                param(
                    "b",
                    "float",
                    Some(Data::Float(0.75)),
                    "length normalisation, in [0, 1]",
                ),
            ],
            returns: "list[dict]",
        },
        ToolSpec {
            name: "chunk",
            description: "Splits a text into chunks of `size` words overlapping by `overlap`.",
            params: vec![
                param("text", "str", None, "the text"),
                param("size", "int", Some(Data::Int(200)), "words per chunk"),
                param(
                    "overlap",
                    "int",
                    Some(Data::Int(20)),
                    "words shared by neighbours",
                ),
            ],
            returns: "list[str]",
        },
    ]
}

/// The arguments of a call, checked against `spec` and completed with the defaults.
fn bind(spec: &ToolSpec, mut args: BTreeMap<String, Data>) -> Result<BTreeMap<&'static str, Data>> {
    let bad = |m: String| EngineError::InvalidArgument(format!("tool {:?}: {m}", spec.name));
    let mut out = BTreeMap::new();
    for p in &spec.params {
        let v = match args.remove(p.name) {
            Some(v) => v,
            None => p
                .default
                .clone()
                .ok_or_else(|| bad(format!("missing argument {:?}", p.name)))?,
        };
        let v = match (p.ty, v) {
            ("any", v) => v,
            ("str", v @ Data::Str(_)) | ("int", v @ Data::Int(_)) | ("bool", v @ Data::Bool(_)) => {
                v
            }
            ("float", Data::Int(i)) => Data::Float(i as f64),
            ("float", v @ Data::Float(_)) => v,
            (ty, v) => {
                return Err(bad(format!(
                    "argument {:?} must be a {ty}, got a {} ({v})",
                    p.name,
                    v.kind()
                )))
            }
        };
        out.insert(p.name, v);
    }
    if let Some(extra) = args.keys().next() {
        let names: Vec<&str> = spec.params.iter().map(|p| p.name).collect();
        return Err(bad(format!(
            "unknown argument {extra:?} (it takes {names:?})"
        )));
    }
    Ok(out)
}

fn int(a: &BTreeMap<&str, Data>, k: &str) -> i64 {
    match a.get(k) {
        Some(Data::Int(i)) => *i,
        _ => 0,
    }
}

fn float(a: &BTreeMap<&str, Data>, k: &str) -> f64 {
    match a.get(k) {
        Some(Data::Float(x)) => *x,
        _ => f64::NAN,
    }
}

fn text<'a>(a: &'a BTreeMap<&str, Data>, k: &str) -> &'a str {
    match a.get(k) {
        Some(Data::Str(s)) => s,
        _ => "",
    }
}

fn count(name: &str, v: i64) -> Result<usize> {
    usize::try_from(v)
        .map_err(|_| EngineError::InvalidArgument(format!("{name} must be >= 0, got {v}")))
}

/// Runs the native tool `name` of `session` with named arguments.
pub fn call_native(session: &Session, name: &str, args: BTreeMap<String, Data>) -> Result<Data> {
    session.touch();
    let spec = native_specs()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| EngineError::NotFoundIn {
            what: "tool",
            name: name.to_string(),
        })?;
    let a = bind(&spec, args)?;
    let invalid =
        |e: dspex_native::NativeError| EngineError::InvalidArgument(format!("tool {name:?}: {e}"));
    Ok(match name {
        "echo" => a.get("value").cloned().unwrap_or(Data::Null),
        "search" => {
            let idx = session.index_named(text(&a, "index"))?;
            let hits = idx
                .index
                .search(
                    text(&a, "query"),
                    count("k", int(&a, "k"))?,
                    float(&a, "k1"),
                    float(&a, "b"),
                )
                .map_err(invalid)?;
            Data::List(
                hits.into_iter()
                    .map(|h| {
                        let mut m = BTreeMap::new();
                        m.insert("id".to_string(), idx.ids[h.doc].clone());
                        m.insert("score".to_string(), Data::Float(h.score));
                        m.insert("text".to_string(), Data::Str(idx.texts[h.doc].clone()));
                        Data::Map(m)
                    })
                    .collect(),
            )
        }
        "chunk" => Data::List(
            chunk_words(
                text(&a, "text"),
                count("size", int(&a, "size"))?,
                count("overlap", int(&a, "overlap"))?,
            )
            .map_err(invalid)?
            .into_iter()
            .map(Data::Str)
            .collect(),
        ),
        _ => unreachable!("every spec has an implementation"),
    })
}

/// A tokenizer from the options of `index`.
pub fn tokenizer(stop_words: bool, stem: bool) -> Tokenizer {
    Tokenizer { stop_words, stem }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Sessions;
    use std::time::Duration;

    fn args(pairs: &[(&str, Data)]) -> BTreeMap<String, Data> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn search_chunk_and_echo() {
        let s = Sessions::default()
            .open(None, Duration::from_secs(60))
            .unwrap();
        let texts = vec![
            "the quick brown fox".to_string(),
            "a lazy dog sleeps".to_string(),
            "the fox and the dog".to_string(),
        ];
        s.index("docs", texts, None, tokenizer(true, false))
            .unwrap();
        let out = call_native(
            &s,
            "search",
            args(&[
                ("index", Data::Str("docs".into())),
                ("query", Data::Str("fox".into())),
                ("k", Data::Int(1)),
            ]),
        )
        .unwrap();
        let Data::List(hits) = out else {
            panic!("{out:?}")
        };
        assert_eq!(hits.len(), 1);
        let Data::Map(m) = &hits[0] else { panic!() };
        // "fox" is in documents 0 and 2; the shorter one (2 terms after stop words) wins.
        assert_eq!(m["id"], Data::Int(2));
        assert_eq!(
            call_native(&s, "echo", args(&[("value", Data::Int(7))])).unwrap(),
            Data::Int(7)
        );
        let c = call_native(
            &s,
            "chunk",
            args(&[
                ("text", Data::Str("a b c d".into())),
                ("size", Data::Int(2)),
                ("overlap", Data::Int(0)),
            ]),
        )
        .unwrap();
        assert_eq!(
            c,
            Data::List(vec![Data::Str("a b".into()), Data::Str("c d".into())])
        );
    }

    #[test]
    fn bad_calls_name_what_is_wrong() {
        let s = Sessions::default()
            .open(None, Duration::from_secs(60))
            .unwrap();
        let e = call_native(&s, "nope", BTreeMap::new()).unwrap_err();
        assert_eq!(e.to_string(), "tool \"nope\" not found");
        let e = call_native(&s, "search", args(&[("query", Data::Str("x".into()))])).unwrap_err();
        assert!(e.to_string().contains("missing argument \"index\""), "{e}");
        let e = call_native(
            &s,
            "search",
            args(&[("index", Data::Int(1)), ("query", Data::Str("x".into()))]),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("argument \"index\" must be a str, got a int"),
            "{e}"
        );
        let e = call_native(&s, "echo", args(&[("valu", Data::Int(1))])).unwrap_err();
        assert!(e.to_string().contains("unknown argument \"valu\""), "{e}");
        let e = call_native(
            &s,
            "search",
            args(&[
                ("index", Data::Str("none".into())),
                ("query", Data::Str("x".into())),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("index \"none\" not found"), "{e}");
    }
}
