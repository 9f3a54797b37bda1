//! Splitting long texts into overlapping chunks of words, for indexing passages instead of whole
//! documents.

use crate::NativeError;

/// Chunks of at most `size` whitespace-separated words, each starting `size - overlap` words
/// after the previous one (the last chunk ends at the text's end). Words keep their text;
/// chunks are joined with single spaces.
pub fn chunk_words(text: &str, size: usize, overlap: usize) -> Result<Vec<String>, NativeError> {
    if size == 0 {
        return Err(NativeError::InvalidArgument("size must be >= 1".into()));
    }
    if overlap >= size {
        return Err(NativeError::InvalidArgument(format!(
            "overlap ({overlap}) must be smaller than size ({size})"
        )));
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let step = size - overlap;
    let mut out = Vec::new();
    let mut start = 0;
    while start < words.len() {
        let end = (start + size).min(words.len());
        out.push(words[start..end].join(" "));
        if end == words.len() {
            break;
        }
        start += step;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_overlap_and_cover_the_text() {
        let c = chunk_words("a b c d e f g", 3, 1).unwrap();
        assert_eq!(c, vec!["a b c", "c d e", "e f g"]);
        assert_eq!(chunk_words("a b", 5, 0).unwrap(), vec!["a b"]);
        assert!(chunk_words("", 5, 0).unwrap().is_empty());
        assert!(chunk_words("a", 0, 0).is_err());
        assert!(chunk_words("a", 2, 2).is_err());
    }
}
