//! dspex-native: the engine-native modules that programs and session tools use. Async-free,
//! Python-free, storage-free: BM25 full-text retrieval ([`bm25`]) and text chunking
//! ([`chunk`]).

pub mod bm25;
pub mod chunk;

pub use bm25::{Bm25Index, Hit, Tokenizer};
pub use chunk::chunk_words;

/// Errors of the native modules.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NativeError {
    /// A bad argument (Python: ValueError).
    #[error("{0}")]
    InvalidArgument(String),
}
