//! DSPy-style signatures for LM predictions: parsing `"context, question -> answer"`, the chat
//! prompt a prediction sends, and reading the output fields back from the answer.
//!
//! # The chat format
//!
//! A prediction sends a system message that states the task and the fields, then one user
//! message (and one assistant message) per demonstration, then the user message of the
//! example. Every field is written under a header line of its own, `## name`:
//!
//! ```text
//! system:    Answer the question from the context.
//!
//!            Inputs: context (str), question (str)
//!            Outputs: answer (str)
//!
//!            Write each output field under its own header line (## answer), in that order,
//!            and nothing else.
//! user:      ## context
//!            [1] first passage
//!            [2] second passage
//!
//!            ## question
//!            Who wrote it?
//! assistant: ## answer
//!            ...
//! ```
//!
//! Reading the answer is lenient: headers are matched without regard to case, `#` count,
//! surrounding `*` or a trailing colon; `name: value` lines count when the answer has no
//! headers; an answer of a single text field without any header is that field. A field that
//! is missing or does not convert to its type is an error that names it.

use serde_json::{Map, Value};

use crate::NativeError;

/// The type of a signature field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// Text (the default).
    Str,
    /// An integer.
    Int,
    /// A number.
    Float,
    /// true / false.
    Bool,
    /// A list of texts (one per line, or a JSON array).
    List,
}

impl FieldType {
    fn parse(s: &str) -> Option<FieldType> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "str" | "string" | "text" => FieldType::Str,
            "int" | "integer" => FieldType::Int,
            "float" | "number" => FieldType::Float,
            "bool" | "boolean" => FieldType::Bool,
            "list" | "list[str]" => FieldType::List,
            _ => return None,
        })
    }

    /// The type's name in a signature.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Str => "str",
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::Bool => "bool",
            FieldType::List => "list",
        }
    }
}

/// A named, typed field of a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field's name (an identifier).
    pub name: String,
    /// Its type.
    pub ty: FieldType,
}

/// Input and output fields of a prediction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// What the prediction reads.
    pub inputs: Vec<Field>,
    /// What it writes.
    pub outputs: Vec<Field>,
}

fn fields(side: &str, which: &str, text: &str) -> Result<Vec<Field>, NativeError> {
    let bad = |m: String| NativeError::InvalidArgument(format!("signature {text:?}: {m}"));
    let mut out: Vec<Field> = Vec::new();
    for part in side.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(bad(format!("an empty {which} field")));
        }
        let (name, ty) = match part.split_once(':') {
            Some((n, t)) => (
                n.trim(),
                FieldType::parse(t).ok_or_else(|| {
                    bad(format!(
                        "field {:?} has an unknown type {:?} (str, int, float, bool, list)",
                        n.trim(),
                        t.trim()
                    ))
                })?,
            ),
            None => (part, FieldType::Str),
        };
        let ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(bad(format!(
                "{name:?} is not a field name (letters, digits, _)"
            )));
        }
        if out.iter().any(|f| f.name == name) {
            return Err(bad(format!("field {name:?} appears twice")));
        }
        out.push(Field {
            name: name.to_string(),
            ty,
        });
    }
    Ok(out)
}

impl Signature {
    /// Parses `"in1, in2: type -> out1, out2: type"`.
    pub fn parse(text: &str) -> Result<Signature, NativeError> {
        let (ins, outs) = text.split_once("->").ok_or_else(|| {
            NativeError::InvalidArgument(format!(
                "signature {text:?}: expected \"inputs -> outputs\", e.g. \"context, question -> answer\""
            ))
        })?;
        let sig = Signature {
            inputs: fields(ins, "input", text)?,
            outputs: fields(outs, "output", text)?,
        };
        if let Some(f) = sig
            .outputs
            .iter()
            .find(|o| sig.inputs.iter().any(|i| i.name == o.name))
        {
            return Err(NativeError::InvalidArgument(format!(
                "signature {text:?}: {:?} is both an input and an output",
                f.name
            )));
        }
        Ok(sig)
    }

    /// This signature with a text output `reasoning` first (chain of thought).
    pub fn with_reasoning(&self) -> Signature {
        let mut s = self.clone();
        if !s.outputs.iter().any(|f| f.name == "reasoning") {
            s.outputs.insert(
                0,
                Field {
                    name: "reasoning".into(),
                    ty: FieldType::Str,
                },
            );
        }
        s
    }

    fn list(fields: &[Field]) -> String {
        fields
            .iter()
            .map(|f| format!("{} ({})", f.name, f.ty.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The default instructions: what to produce from what.
    pub fn default_instructions(&self) -> String {
        let names = |f: &[Field]| {
            f.iter()
                .map(|f| format!("`{}`", f.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "Given the fields {}, produce the fields {}.",
            names(&self.inputs),
            names(&self.outputs)
        )
    }

    /// The chat messages of a prediction: `inputs` holds the input fields; `demos` are earlier
    /// examples with input and output fields (fields a demo lacks are left out of it).
    pub fn messages(
        &self,
        instructions: &str,
        demos: &[Map<String, Value>],
        inputs: &Map<String, Value>,
    ) -> Result<Value, NativeError> {
        let headers = self
            .outputs
            .iter()
            .map(|f| format!("## {}", f.name))
            .collect::<Vec<_>>()
            .join(", ");
        let system = format!(
            "{instructions}\n\nInputs: {}\nOutputs: {}\n\nWrite each output field under its own header line ({headers}), in that order, and nothing else.",
            Self::list(&self.inputs),
            Self::list(&self.outputs),
        );
        let mut messages = vec![serde_json::json!({"role": "system", "content": system})];
        for demo in demos {
            let user = render(&self.inputs, demo);
            let assistant = render(&self.outputs, demo);
            if user.is_empty() || assistant.is_empty() {
                continue;
            }
            messages.push(serde_json::json!({"role": "user", "content": user}));
            messages.push(serde_json::json!({"role": "assistant", "content": assistant}));
        }
        if let Some(f) = self.inputs.iter().find(|f| !inputs.contains_key(&f.name)) {
            return Err(NativeError::InvalidArgument(format!(
                "input field {:?} is missing",
                f.name
            )));
        }
        messages.push(serde_json::json!({"role": "user", "content": render(&self.inputs, inputs)}));
        Ok(Value::Array(messages))
    }

    /// Reads the output fields from an answer.
    pub fn parse_answer(&self, text: &str) -> Result<Map<String, Value>, NativeError> {
        let mut raw: Vec<(String, String)> = Vec::new();
        // `name: value` lines start fields only in an answer without header lines
        let headers = text
            .lines()
            .any(|l| header(l).and_then(|h| self.output_named(h)).is_some());
        for line in text.lines() {
            let started = if headers {
                header(line)
                    .and_then(|h| self.output_named(h))
                    .map(|n| (n, ""))
            } else {
                line.split_once(':').and_then(|(n, rest)| {
                    self.output_named(n.trim().trim_matches('*'))
                        .map(|n| (n, rest))
                })
            };
            match (started, raw.last_mut()) {
                (Some((name, rest)), _) => raw.push((name.to_string(), format!("{rest}\n"))),
                (None, Some((_, v))) => {
                    v.push_str(line);
                    v.push('\n');
                }
                (None, None) => {}
            }
        }
        if raw.is_empty() && self.outputs.len() == 1 && self.outputs[0].ty == FieldType::Str {
            raw.push((self.outputs[0].name.clone(), text.to_string()));
        }
        let mut out = Map::new();
        for f in &self.outputs {
            let Some((_, v)) = raw.iter().find(|(n, _)| *n == f.name) else {
                return Err(NativeError::InvalidArgument(format!(
                    "the answer has no field {:?}",
                    f.name
                )));
            };
            out.insert(f.name.clone(), convert(f, v.trim())?);
        }
        Ok(out)
    }

    fn output_named(&self, name: &str) -> Option<&str> {
        self.outputs
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name.trim()))
            .map(|f| f.name.as_str())
    }
}

/// The field name of a header line (`## name`, `**name**`, `### Name:`), if it is one.
fn header(line: &str) -> Option<&str> {
    let t = line.trim();
    let inner = if let Some(rest) = t.strip_prefix('#') {
        rest.trim_start_matches('#')
    } else if t.starts_with("**") && t.ends_with("**") && t.len() > 4 {
        &t[2..t.len() - 2]
    } else {
        return None;
    };
    let name = inner.trim().trim_matches('*').trim_end_matches(':').trim();
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then_some(name)
}

fn render(fields: &[Field], values: &Map<String, Value>) -> String {
    let mut parts = Vec::new();
    for f in fields {
        if let Some(v) = values.get(&f.name) {
            parts.push(format!("## {}\n{}", f.name, value_text(v)));
        }
    }
    parts.join("\n\n")
}

/// How a value is written into a prompt: texts as they are, lists as numbered lines.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, x)| format!("[{}] {}", i + 1, value_text(x).replace('\n', " ")))
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

fn convert(f: &Field, v: &str) -> Result<Value, NativeError> {
    let bad = || {
        NativeError::InvalidArgument(format!(
            "field {:?}: {v:?} is not a {}",
            f.name,
            f.ty.name()
        ))
    };
    Ok(match f.ty {
        FieldType::Str => Value::String(v.to_string()),
        FieldType::Int => Value::from(v.trim_end_matches('.').parse::<i64>().map_err(|_| bad())?),
        FieldType::Float => serde_json::Number::from_f64(v.parse::<f64>().map_err(|_| bad())?)
            .map(Value::Number)
            .ok_or_else(bad)?,
        FieldType::Bool => Value::Bool(match v.to_ascii_lowercase().trim_end_matches('.') {
            "true" | "yes" => true,
            "false" | "no" => false,
            _ => return Err(bad()),
        }),
        FieldType::List => match serde_json::from_str::<Value>(v) {
            Ok(Value::Array(a)) => Value::Array(a),
            _ => Value::Array(
                v.lines()
                    .map(|l| l.trim().trim_start_matches(['-', '*']).trim())
                    .map(
                        |l| match l.strip_prefix('[').and_then(|r| r.split_once(']')) {
                            Some((n, rest)) if n.chars().all(|c| c.is_ascii_digit()) => rest.trim(),
                            _ => l,
                        },
                    )
                    .filter(|l| !l.is_empty())
                    .map(|l| Value::String(l.to_string()))
                    .collect(),
            ),
        },
    })
}

/// Reciprocal-rank fusion of two rankings: an item's score is `weight / (c + rank_a) + (1 -
/// weight) / (c + rank_b)` (ranks from 1, `c` = 60 as in the RRF paper); returns the best `k`
/// items, first appearance breaking ties.
pub fn fuse(a: &[Value], b: &[Value], weight: f64, k: usize) -> Vec<Value> {
    const C: f64 = 60.0;
    let mut scored: Vec<(Value, f64, usize)> = Vec::new();
    for (list, w) in [(a, weight), (b, 1.0 - weight)] {
        for (rank, item) in list.iter().enumerate() {
            let s = w / (C + rank as f64 + 1.0);
            match scored.iter_mut().find(|(x, _, _)| x == item) {
                Some(e) => e.1 += s,
                None => {
                    let n = scored.len();
                    scored.push((item.clone(), s, n));
                }
            }
        }
    }
    scored.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.2.cmp(&y.2)));
    scored.into_iter().take(k).map(|(v, _, _)| v).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn signatures_parse_with_types_and_refuse_mistakes() {
        let s = Signature::parse("context: list, question -> answer, confidence: float").unwrap();
        assert_eq!(s.inputs[0].ty, FieldType::List);
        assert_eq!(
            s.outputs[1],
            Field {
                name: "confidence".into(),
                ty: FieldType::Float
            }
        );
        for (bad, says) in [
            ("question answer", "inputs -> outputs"),
            ("q -> ", "empty output"),
            ("q -> a: tensor", "unknown type"),
            ("q, q -> a", "twice"),
            ("q -> q", "both an input and an output"),
            ("my field -> a", "not a field name"),
        ] {
            let e = Signature::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn messages_carry_instructions_demos_and_inputs() {
        let s = Signature::parse("context: list, question -> answer").unwrap();
        let demo = map(json!({"context": ["x"], "question": "q0", "answer": "a0"}));
        let m = s
            .messages(
                "Be brief.",
                &[demo],
                &map(json!({"context": ["p1", "p2"], "question": "q?"})),
            )
            .unwrap();
        let m = m.as_array().unwrap();
        assert_eq!(m.len(), 4);
        let system = m[0]["content"].as_str().unwrap();
        assert!(
            system.starts_with("Be brief.") && system.contains("Outputs: answer (str)"),
            "{system}"
        );
        assert_eq!(m[2]["content"], "## answer\na0");
        assert_eq!(
            m[3]["content"],
            "## context\n[1] p1\n[2] p2\n\n## question\nq?"
        );
        let e = s
            .messages("", &[], &map(json!({"question": "q"})))
            .unwrap_err();
        assert!(e.to_string().contains("\"context\""), "{e}");
    }

    #[test]
    fn answers_are_read_leniently_and_checked() {
        let s = Signature::parse("q -> reasoning, answer: int").unwrap();
        let out = s
            .parse_answer("## Reasoning\nbecause\nof this\n\n**answer:**\n42\n")
            .unwrap();
        assert_eq!(out["reasoning"], "because\nof this");
        assert_eq!(out["answer"], 42);
        let out = s.parse_answer("reasoning: short\nanswer: 7").unwrap();
        assert_eq!(out["answer"], 7);
        let e = s
            .parse_answer("## reasoning\nx\n## answer\nforty-two")
            .unwrap_err();
        assert!(
            e.to_string().contains("\"answer\"") && e.to_string().contains("not a int"),
            "{e}"
        );
        let e = s.parse_answer("## reasoning\nx").unwrap_err();
        assert!(e.to_string().contains("no field \"answer\""), "{e}");
        let one = Signature::parse("q -> answer").unwrap();
        assert_eq!(
            one.parse_answer("just text").unwrap()["answer"],
            "just text"
        );
        let l = Signature::parse("q -> items: list, ok: bool").unwrap();
        let out = l.parse_answer("## items\n- a\n- b\n## ok\nYes").unwrap();
        assert_eq!(out["items"], json!(["a", "b"]));
        assert_eq!(out["ok"], true);
    }

    #[test]
    fn fusion_weights_the_two_rankings() {
        let a = [json!("x"), json!("y"), json!("z")];
        let b = [json!("z"), json!("w")];
        assert_eq!(fuse(&a, &b, 1.0, 2), vec![json!("x"), json!("y")]);
        assert_eq!(fuse(&a, &b, 0.0, 2), vec![json!("z"), json!("w")]);
        assert_eq!(fuse(&a, &b, 0.5, 1), vec![json!("z")]); // in both lists
    }
}
