//! dspex-native: the engine-native modules that programs and session tools use. Python-free and
//! free of study storage: BM25 full-text retrieval ([`bm25`]), text chunking ([`chunk`]) and the
//! OpenAI-compatible LM client ([`lm`], async on tokio; its cache may keep a SQLite file), and
//! the signatures, prompts and answer parsing of LM predictions ([`predict`]).

pub mod bm25;
pub mod chunk;
pub mod lm;
pub mod predict;

pub use bm25::{Bm25Index, Hit, Tokenizer};
pub use chunk::chunk_words;

/// Errors of the native modules.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NativeError {
    /// A bad argument (Python: ValueError).
    #[error("{0}")]
    InvalidArgument(String),
}
