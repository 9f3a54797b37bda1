//! Okapi BM25 over an inverted index that keeps raw term frequencies and document lengths, so
//! `k1` and `b` are query-time parameters: one index serves every trial of a study that tunes
//! them. The tokenizer (lower-casing, English stop words, Snowball stemming on or off) is an
//! index-time option; queries go through the same tokenizer.
//!
//! Score of document d for query q (Lucene's variant since Lucene 8, without the constant
//! `k1 + 1` factor, as `bm25s` computes it with `method="lucene"`):
//! `sum over terms t in q of idf(t) * tf(t,d) / (tf(t,d) + k1 * (1 - b + b * |d| / avgdl))`
//! with `idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))`.

use std::collections::HashMap;

use rust_stemmers::{Algorithm, Stemmer};

use crate::NativeError;

/// English stop words removed by the tokenizer when `stop_words` is on.
pub const ENGLISH_STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// How text becomes terms: split on anything that is not a letter or a digit, lower-cased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tokenizer {
    /// Drop [`ENGLISH_STOP_WORDS`].
    pub stop_words: bool,
    /// Reduce words to their English Snowball stem ("running" → "run").
    pub stem: bool,
}

impl Default for Tokenizer {
    fn default() -> Self {
        Tokenizer {
            stop_words: true,
            stem: false,
        }
    }
}

impl Tokenizer {
    /// The terms of `text`, in order.
    pub fn tokens(&self, text: &str) -> Vec<String> {
        let stemmer = self.stem.then(|| Stemmer::create(Algorithm::English));
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .filter(|w| !(self.stop_words && ENGLISH_STOP_WORDS.binary_search(&w.as_str()).is_ok()))
            .map(|w| match &stemmer {
                Some(s) => s.stem(&w).into_owned(),
                None => w,
            })
            .collect()
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Position of the document in the index (the order it was added in).
    pub doc: usize,
    /// Its BM25 score (higher is better).
    pub score: f64,
}

/// A BM25 index over a fixed set of documents.
#[derive(Debug, Clone)]
pub struct Bm25Index {
    tokenizer: Tokenizer,
    vocab: HashMap<String, u32>,
    /// Per term: (document, term frequency), by document.
    postings: Vec<Vec<(u32, u32)>>,
    doc_len: Vec<u32>,
    avgdl: f64,
}

impl Bm25Index {
    /// Indexes `texts` (document i is `texts[i]`).
    pub fn build<S: AsRef<str>>(texts: &[S], tokenizer: Tokenizer) -> Bm25Index {
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut postings: Vec<Vec<(u32, u32)>> = Vec::new();
        let mut doc_len = Vec::with_capacity(texts.len());
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for (d, text) in texts.iter().enumerate() {
            counts.clear();
            let tokens = tokenizer.tokens(text.as_ref());
            doc_len.push(tokens.len() as u32);
            for t in tokens {
                let next = vocab.len() as u32;
                let id = *vocab.entry(t).or_insert(next);
                if id == next {
                    postings.push(Vec::new());
                }
                *counts.entry(id).or_insert(0) += 1;
            }
            for (&id, &tf) in &counts {
                postings[id as usize].push((d as u32, tf));
            }
        }
        let total: u64 = doc_len.iter().map(|&l| u64::from(l)).sum();
        let avgdl = if doc_len.is_empty() {
            0.0
        } else {
            total as f64 / doc_len.len() as f64
        };
        Bm25Index {
            tokenizer,
            vocab,
            postings,
            doc_len,
            avgdl,
        }
    }

    /// How many documents the index holds.
    pub fn len(&self) -> usize {
        self.doc_len.len()
    }

    /// True when the index holds no document.
    pub fn is_empty(&self) -> bool {
        self.doc_len.is_empty()
    }

    /// The tokenizer documents and queries go through.
    pub fn tokenizer(&self) -> Tokenizer {
        self.tokenizer
    }

    /// The `k` best documents for `query`, best first (documents without any query term are
    /// left out; ties go to the earlier document).
    pub fn search(&self, query: &str, k: usize, k1: f64, b: f64) -> Result<Vec<Hit>, NativeError> {
        if !(k1.is_finite() && k1 >= 0.0) {
            return Err(NativeError::InvalidArgument(format!(
                "k1 must be a finite number >= 0, got {k1}"
            )));
        }
        if !(0.0..=1.0).contains(&b) {
            return Err(NativeError::InvalidArgument(format!(
                "b must be in [0, 1], got {b}"
            )));
        }
        if k == 0 || self.is_empty() {
            return Ok(Vec::new());
        }
        let n = self.len() as f64;
        let mut scores = vec![0f64; self.len()];
        let mut touched = vec![false; self.len()];
        // Length normalisation per document, for this b and k1.
        let norm: Vec<f64> = self
            .doc_len
            .iter()
            .map(|&l| k1 * (1.0 - b + b * f64::from(l) / self.avgdl.max(f64::MIN_POSITIVE)))
            .collect();
        // A term repeated in the query counts as often as it is repeated (as in Lucene).
        let mut terms: HashMap<String, f64> = HashMap::new();
        for t in self.tokenizer.tokens(query) {
            *terms.entry(t).or_insert(0.0) += 1.0;
        }
        for (t, times) in terms {
            let Some(&id) = self.vocab.get(&t) else {
                continue;
            };
            let plist = &self.postings[id as usize];
            let df = plist.len() as f64;
            let idf = times * (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for &(d, tf) in plist {
                let tf = f64::from(tf);
                let d = d as usize;
                scores[d] += idf * tf / (tf + norm[d]);
                touched[d] = true;
            }
        }
        let mut hits: Vec<Hit> = scores
            .into_iter()
            .enumerate()
            .filter(|(d, _)| touched[*d])
            .map(|(doc, score)| Hit { doc, score })
            .collect();
        let by_score = |a: &Hit, b: &Hit| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc));
        if hits.len() > k {
            hits.select_nth_unstable_by(k - 1, by_score);
            hits.truncate(k);
        }
        hits.sort_by(by_score);
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        let mut sorted = ENGLISH_STOP_WORDS.to_vec();
        sorted.sort();
        assert_eq!(sorted, ENGLISH_STOP_WORDS);
    }

    #[test]
    fn tokenizer_options() {
        let t = Tokenizer {
            stop_words: true,
            stem: true,
        };
        assert_eq!(
            t.tokens("The Cats were RUNNING, quickly!"),
            vec!["cat", "run", "quick"]
        );
        let plain = Tokenizer {
            stop_words: false,
            stem: false,
        };
        assert_eq!(plain.tokens("a-b c_d"), vec!["a", "b", "c", "d"]);
    }

    #[test]
    fn scores_match_the_formula() {
        let docs = ["apple banana", "apple apple cherry", "durian"];
        let idx = Bm25Index::build(&docs, Tokenizer::default());
        let hits = idx.search("apple", 10, 1.5, 0.75).unwrap();
        assert_eq!(hits.iter().map(|h| h.doc).collect::<Vec<_>>(), vec![1, 0]);
        // By hand: N=3, df=2, idf=ln(1+(3-2+0.5)/(2+0.5)); avgdl=(2+3+1)/3=2.
        let idf = (1.0f64 + 1.5 / 2.5).ln();
        let s1 = idf * 2.0 / (2.0 + 1.5 * (1.0 - 0.75 + 0.75 * 3.0 / 2.0));
        assert!((hits[0].score - s1).abs() < 1e-12);
        // b = 0: no length normalisation, so the tf-1 doc scores idf / (1 + k1).
        let flat = idx.search("apple", 10, 1.5, 0.0).unwrap();
        assert!((flat[1].score - idf / 2.5).abs() < 1e-12);
        assert!(idx.search("zebra", 10, 1.5, 0.75).unwrap().is_empty());
        assert!(idx.search("apple", 10, -1.0, 0.75).is_err());
        assert!(idx.search("apple", 10, 1.0, 1.5).is_err());
        assert_eq!(idx.search("apple durian", 1, 1.2, 0.75).unwrap().len(), 1);
        let twice = idx.search("apple apple", 10, 1.5, 0.75).unwrap();
        assert!((twice[0].score - 2.0 * s1).abs() < 1e-12);
    }

    #[test]
    fn top_k_is_the_best_k_in_order() {
        let docs: Vec<String> = (0..500)
            .map(|i| format!("term{} shared {}", i % 7, "filler ".repeat(i % 13)))
            .collect();
        let idx = Bm25Index::build(&docs, Tokenizer::default());
        let all = idx.search("term3 shared", 1000, 1.2, 0.75).unwrap();
        let top = idx.search("term3 shared", 10, 1.2, 0.75).unwrap();
        assert_eq!(top, all[..10].to_vec());
        assert!(all.windows(2).all(|w| w[0].score >= w[1].score));
    }
}
